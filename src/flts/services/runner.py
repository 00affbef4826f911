"""Run one service's consume loop until told to stop: the body of ``flts worker NAME``.

Each worker is its own OS process in the embedded and distributed modes; ``flts pipeline``
runs the same loops as threads. SIGTERM and SIGINT stop the loop between messages (the bus
never interrupts a handler, but a stop ends a wait for an unreachable backend at once), then
the bus is closed. The loop waits out outages for ``FLTS_BUS__OUTAGE_BUDGET_SECONDS``
(:func:`retry_policy`); past that the error ends the loop and the process, for its
supervisor to restart.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from flts.bus.base import RetryPolicy
from flts.events import Event
from flts.exceptions import ConfigurationError
from flts.services.context import ServiceContext
from flts.services.health import HealthState
from flts.services.metrics import instrument, worker_metrics
from flts.settings import BusSettings

log = logging.getLogger(__name__)

WORKERS = (
    "preprocess",
    "train",
    "evaluate",
    "batch-inference",
    "observations",
    "monitor",
    "forecaster",
)
#: How often the evaluator looks for config hashes whose deadline has passed.
DEADLINE_TICK_SECONDS = 2.0


class Service(Protocol):
    @property
    def topics(self) -> tuple[str, ...]: ...

    @property
    def group(self) -> str: ...

    def handle(self, event: Event) -> None: ...


def build_service(name: str, context: ServiceContext, model_type: str | None = None) -> Service:
    """The service object for ``name``; configuration errors surface here, at start-up."""
    if name == "preprocess":
        from flts.services.preprocess import PreprocessService

        return PreprocessService(context)
    if name == "train":
        model = model_type or context.settings.training.model_type
        if not model:
            raise ConfigurationError(
                "a trainer needs a model type: pass --model or set FLTS_MODEL_TYPE"
            )
        if model.strip().upper() == "GLOBAL":  # one network per group of stations
            from flts.services.train_global import GlobalTrainService

            return GlobalTrainService(context)
        from flts.services.train import TrainService

        return TrainService(context, model)
    if name == "evaluate":
        from flts.services.evaluate import EvaluateService

        return EvaluateService(context)
    if name == "batch-inference":
        from flts.services.batch_inference import BatchInferenceService

        return BatchInferenceService(context)
    if name == "observations":
        from flts.live.worker import ObservationsService

        return ObservationsService(context)
    if name == "monitor":
        from flts.live.monitor_service import MonitorService

        return MonitorService(context)
    if name == "forecaster":
        from flts.live.forecaster import ForecasterService

        return ForecasterService(context)
    raise ConfigurationError(f"unknown worker {name!r}; choose from {', '.join(WORKERS)}")


def retry_policy(settings: BusSettings) -> RetryPolicy:
    """The consume loop's policy with the deployment's outage budget and backoff."""
    return RetryPolicy(
        outage_budget=settings.outage_budget_seconds,
        outage_base_delay=settings.outage_base_delay_seconds,
        outage_max_delay=settings.outage_max_delay_seconds,
    )


def _ticker(tick: Callable[[], None], stop: threading.Event, every: float) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(every):
            try:
                tick()
            except Exception:  # a failed tick is retried at the next one
                log.exception("periodic check failed")

    thread = threading.Thread(target=loop, name="deadline-ticker", daemon=True)
    thread.start()
    return thread


def run_service(
    service: Service,
    context: ServiceContext,
    stop: threading.Event,
    *,
    poll_timeout: float = 0.5,
    health: HealthState | None = None,
    retry: RetryPolicy | None = None,
) -> None:
    """Consume for ``service`` until ``stop`` is set; evaluators also get a deadline ticker.

    The handler is counted in the process's :func:`~flts.services.metrics.worker_metrics`
    (consumed, failed, dead-lettered per topic; trainer retries). With ``health`` (the worker
    serves ``/readyz``), readiness is on while the loop runs and the group's pending messages
    are exported at scrape time; a loop that ends flips liveness off.
    """
    policy = retry or retry_policy(context.settings.bus)
    metrics = worker_metrics()
    model_type = getattr(service, "model_type", None)

    def count_retry(_event: Event) -> None:
        if isinstance(model_type, str):
            metrics.training_retries.labels(model_type).inc()

    handler = instrument(service.handle, service=service.group, policy=policy, on_retry=count_retry)
    check_deadlines = getattr(service, "check_deadlines", None)
    tick = getattr(service, "tick", None)  # a periodic pass of its own (the monitor)
    ticker = None
    if callable(check_deadlines):
        ticker = _ticker(check_deadlines, stop, DEADLINE_TICK_SECONDS)
    elif callable(tick):
        ticker = _ticker(tick, stop, float(getattr(service, "tick_seconds", DEADLINE_TICK_SECONDS)))
    if health is not None:
        metrics.watch_lag(context.bus, service.group, service.topics)
        if callable(check_deadlines):  # the evaluator: the promotion clock survives restarts
            metrics.seed_last_promotions(context.promotions)
        health.mark_ready()
    try:
        context.bus.consume(
            service.topics,
            service.group,
            handler,
            stop=stop,
            poll_timeout=poll_timeout,
            retry=policy,
        )
    finally:
        stop.set()
        if health is not None:
            health.mark_dead()
        if ticker is not None:
            ticker.join(timeout=DEADLINE_TICK_SECONDS + 1)
        close = getattr(service, "close", None)  # e.g. the forecaster writes its ledger
        if callable(close):
            close()


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (the loop finishes its current message, then exits)."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("received signal %s, stopping after the current message", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
