"""Prometheus metrics of the pipeline workers, on one registry per process.

A worker is one OS process (``flts worker NAME``), so one registry per process is one registry
per worker; ``flts pipeline`` runs several services as threads of one process and they share it
(their series differ by label). The inference API keeps its own per-app registry
(:mod:`flts.api.metrics`); names follow the same ``flts_*`` conventions.

Series::

    flts_events_consumed_total{service,topic}            handler returned (event committed)
    flts_events_failed_total{service,topic}              handler raised (one per failed attempt)
    flts_events_dead_lettered_total{service,topic}       handler gave up: sent to dlq.<topic>
    flts_consumer_pending_messages{group,topic}          uncommitted by the group (read at scrape)
    flts_training_duration_seconds{model_type}           histogram of successful trainings
    flts_training_failures_total{model_type,kind}        kind: model (FAILED run) | infrastructure
    flts_training_retries_total{model_type}              trainer attempts retried by the bus
    flts_promotions_total{identifier,model_type}         champions promoted by the evaluator
    flts_promotion_rejections_total{identifier,reason}   decisions without a promotion
    flts_last_promotion_timestamp_seconds{identifier}    unix time of the newest promotion
    flts_promotion_history_damaged_total{identifier}     damaged history entries readers skipped

Rejection ``reason`` is the gate's :class:`~flts.promotion.ReasonCode` of a decision that
promoted nothing (``baseline``, ``baseline_at_step``, ``champion``, ``no_candidate``), never
the free-text gate message, so the series count stays bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from flts.exceptions import InfrastructureError
from flts.promotion.gate import ReasonCode

if TYPE_CHECKING:
    from prometheus_client import Metric

    from flts.bus import Bus
    from flts.bus.base import RetryPolicy
    from flts.events import Event
    from flts.promotion import PromotionStore

log = logging.getLogger(__name__)

#: Trainings take from well under a second (ridge) to many minutes (LSTM on a large station).
TRAINING_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class WorkerMetrics:
    """The collectors every worker exposes on ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        events = ("service", "topic")
        self.consumed = Counter(
            "flts_events_consumed",
            "Events whose handler returned (committed), by service and topic.",
            events,
            registry=self.registry,
        )
        self.failed = Counter(
            "flts_events_failed",
            "Handler attempts that raised (each retry counts), by service and topic.",
            events,
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "flts_events_dead_lettered",
            "Events the handler gave up on and sent to dlq.<topic>, by service and topic.",
            events,
            registry=self.registry,
        )
        self.training_duration = Histogram(
            "flts_training_duration_seconds",
            "Wall time of successful trainings (fit, validation scoring, logging), by model type.",
            ("model_type",),
            buckets=TRAINING_BUCKETS,
            registry=self.registry,
        )
        self.training_failures = Counter(
            "flts_training_failures",
            "Trainings that failed: kind=model (a FAILED run) or infrastructure (raised).",
            ("model_type", "kind"),
            registry=self.registry,
        )
        self.training_retries = Counter(
            "flts_training_retries",
            "Trainer attempts that raised and will be retried by the bus, by model type.",
            ("model_type",),
            registry=self.registry,
        )
        self.promotions = Counter(
            "flts_promotions",
            "Champions promoted by the evaluator.",
            ("identifier", "model_type"),
            registry=self.registry,
        )
        self.rejections = Counter(
            "flts_promotion_rejections",
            "Evaluator decisions that promoted nothing, by reason ("
            + ", ".join(code.value for code in ReasonCode if not code.promotes)
            + ").",
            ("identifier", "reason"),
            registry=self.registry,
        )
        self.last_promotion = Gauge(
            "flts_last_promotion_timestamp_seconds",
            "Unix time of the newest promotion per identifier (from the promotion history).",
            ("identifier",),
            registry=self.registry,
        )
        self.history_damaged = Counter(
            "flts_promotion_history_damaged",
            "Damaged promotion records (truncated, not a promotion) that a reader skipped.",
            ("identifier",),
            registry=self.registry,
        )
        self._lag_lock = threading.Lock()

    def watch_lag(self, bus: Bus, group: str, topics: Iterable[str]) -> None:
        """Export the group's pending messages at scrape time (read from the bus itself, so
        the figure survives restarts and counts what other replicas left behind)."""
        self.registry.register(_LagCollector(bus, group, tuple(topics), self._lag_lock))

    def seed_last_promotions(self, promotions: PromotionStore) -> None:
        """Set the last-promotion gauge from the durable history, so a restarted evaluator
        does not look like one that never promoted (the "no promotion" alert reads it)."""
        try:
            for identifier in promotions.identifiers():
                history = promotions.history(identifier)
                if history:
                    newest = max(p.promoted_at for p in history)
                    self.last_promotion.labels(identifier).set(newest.timestamp())
        except Exception as exc:  # metrics must not stop the evaluator from starting
            log.warning("could not read the promotion history for metrics: %s", exc)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LagCollector(Collector):
    """``flts_consumer_pending_messages`` from :meth:`flts.bus.Bus.lag` on each scrape."""

    def __init__(self, bus: Bus, group: str, topics: tuple[str, ...], lock: threading.Lock) -> None:
        self.bus, self.group, self.topics, self.lock = bus, group, topics, lock

    def describe(self) -> Iterable[Metric]:
        return []  # series are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "flts_consumer_pending_messages",
            "Messages of the topic the consumer group has not committed yet (in flight too).",
            labels=("group", "topic"),
        )
        pending = dict.fromkeys(self.topics, 0)
        try:
            with self.lock:
                for lag in self.bus.lag(self.group):
                    if lag.topic in pending:
                        pending[lag.topic] = lag.pending
        except Exception as exc:  # a scrape must never kill the worker; the gap shows it
            log.warning("could not read consumer lag of %s: %s", self.group, exc)
            return
        for topic, value in sorted(pending.items()):
            family.add_metric((self.group, topic), float(value))
        yield family


_process_metrics: WorkerMetrics | None = None
_process_lock = threading.Lock()


def worker_metrics() -> WorkerMetrics:
    """This process's :class:`WorkerMetrics` (created on first use)."""
    global _process_metrics
    with _process_lock:
        if _process_metrics is None:
            _process_metrics = WorkerMetrics()
        return _process_metrics


def instrument(
    handler: Callable[[Event], None],
    *,
    service: str,
    policy: RetryPolicy,
    metrics: WorkerMetrics | None = None,
    on_retry: Callable[[Event], None] | None = None,
) -> Callable[[Event], None]:
    """Wrap a bus handler to count consumed, failed and dead-lettered events per topic.

    The bus retries a raising handler up to ``policy.max_attempts`` times (at once for
    ``policy.no_retry`` errors), so the wrapper, given the same policy the consume loop uses,
    knows which failure is the last one: that event goes to the dead-letter topic (an
    :class:`~flts.exceptions.InfrastructureError` counts as a failure and a retry, never as an
    attempt: the bus waits outages out). Events the
    bus dead-letters without calling the handler (undecodable bytes, poison pills) are not
    seen here; ``flts dlq list`` shows them.
    """
    chosen = metrics or worker_metrics()
    attempts: dict[str, int] = {}
    lock = threading.Lock()

    def wrapped(event: Event) -> None:
        topic = event.type  # each event type has the topic of the same name
        try:
            handler(event)
        except InfrastructureError:
            # An outage the bus waits out: no attempt used, never a dead letter.
            chosen.failed.labels(service, topic).inc()
            if on_retry is not None:
                on_retry(event)
            raise
        except Exception as exc:
            chosen.failed.labels(service, topic).inc()
            with lock:
                attempt = attempts.get(event.event_id, 0) + 1
                final = attempt >= policy.max_attempts or isinstance(exc, policy.no_retry)
                if final:
                    attempts.pop(event.event_id, None)
                else:
                    attempts[event.event_id] = attempt
            if final:
                chosen.dead_lettered.labels(service, topic).inc()
            elif on_retry is not None:
                on_retry(event)
            raise
        with lock:
            attempts.pop(event.event_id, None)
        chosen.consumed.labels(service, topic).inc()

    return wrapped
