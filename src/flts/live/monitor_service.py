"""``flts worker monitor``: a :class:`~flts.live.monitor.LiveMonitor` pass every
``live.monitor_interval_seconds``, its figures exported as Prometheus gauges::

    flts_live_nrmse{identifier,model_type,horizon}               NRMSE of served forecasts
    flts_live_skill{identifier,model_type,horizon}               1 - MASE against persistence
    flts_live_interval_coverage{identifier,model_type,horizon,level}
    flts_live_scored_forecasts{identifier,model_type,horizon}    steps behind the figures

Only the identifier's newest run is exported per (identifier, model type, horizon), so the
series count follows the fleet, not the history. The worker also follows ``model-selected``
(logged), so a promotion shows in its log next to the figures it changes. Each pass also runs
the retraining triggers (drift detector and schedule, :mod:`flts.live.triggers`), which
publish ``retrain-requested``.

With ``live.monitor_shard`` set the worker is one shard of the monitor: it scores, exports
and triggers for its shard's identifiers only (the gauges of a fleet are the union of the
shards' scrapes), its state under ``monitor/shards/<shard>/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from flts.events import MODEL_SELECTED, Event, ModelSelectedEvent
from flts.live.drift import DriftSettings
from flts.live.monitor import LiveFigure, LiveMonitor, MonitorKeys
from flts.live.observations import ObservationLog
from flts.live.triggers import RetrainTriggers, Schedule
from flts.services.context import ServiceContext
from flts.services.metrics import worker_metrics
from flts.shards import Shard

log = logging.getLogger(__name__)


class LiveFigures(Collector):
    """The latest pass's figures as gauges, built at scrape time."""

    def __init__(self) -> None:
        self.figures: list[LiveFigure] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["identifier", "model_type", "horizon"]
        nrmse = GaugeMetricFamily(
            "flts_live_nrmse", "NRMSE of served forecasts against actuals.", labels=labels
        )
        skill = GaugeMetricFamily(
            "flts_live_skill", "1 - MASE of served forecasts against persistence.", labels=labels
        )
        scored = GaugeMetricFamily(
            "flts_live_scored_forecasts", "Scored forecast steps behind the figures.", labels=labels
        )
        coverage = GaugeMetricFamily(
            "flts_live_interval_coverage",
            "Share of actuals inside the served interval.",
            labels=[*labels, "level"],
        )
        newest: dict[tuple[str, str, int], LiveFigure] = {}
        for figure in self.figures:  # ordered by identifier, run id: keep each key's last run
            newest[(figure.identifier, figure.model_type, figure.step)] = figure
        for (identifier, model_type, step), figure in sorted(newest.items()):
            values = [identifier, model_type, str(step)]
            nrmse.add_metric(values, figure.nrmse)
            scored.add_metric(values, figure.n)
            if figure.skill is not None:
                skill.add_metric(values, figure.skill)
            for level, share in figure.coverage.items():
                coverage.add_metric([*values, level], share)
        yield from (nrmse, skill, coverage, scored)


_GAUGES: list[LiveFigures] = []


def live_gauges() -> LiveFigures:
    """The process's one :class:`LiveFigures`, registered on the worker registry once."""
    if not _GAUGES:
        _GAUGES.append(LiveFigures())
        worker_metrics().registry.register(_GAUGES[0])
    return _GAUGES[0]


class MonitorService:
    """The monitor as a worker: a periodic pass (``tick``), with the retraining triggers,
    beside a ``model-selected`` log."""

    topics = (MODEL_SELECTED,)
    group = "monitor"

    def __init__(self, context: ServiceContext) -> None:
        live = context.settings.live
        spec = context.settings.feature_spec
        drift = DriftSettings(
            delta=live.drift_delta,
            threshold=live.drift_threshold,
            min_samples=live.drift_min_samples,
            clip=live.drift_clip,
        )
        every = live.retrain_every_hours
        shard = Shard.parse(live.monitor_shard, "live.monitor_shard")
        keys = MonitorKeys.of(shard)  # a shard's state is its own (monitor/shards/<shard>/)
        # One log for both, so a station-day is read (and cached) once per pass.
        observations = ObservationLog(context.store, spec)
        triggers = RetrainTriggers(
            context.store,
            context.bus,
            spec,
            drift=drift if live.drift_enabled else None,
            cooldown=timedelta(minutes=live.drift_cooldown_minutes),
            schedule=Schedule(
                every=None if every is None else timedelta(hours=every),
                every_rows=live.retrain_every_rows,
            ),
            observations=observations,
            state_key=keys.triggers_state,
        )
        self.monitor = LiveMonitor(
            context.store,
            spec,
            window=live.monitor_window,
            late_window=timedelta(minutes=live.late_window_minutes),
            triggers=triggers,
            observations=observations,
            shard=shard,
        )
        if not shard.everything:
            log.info("monitor: %s, state under %s", shard.describe(), keys.root)
        self.tick_seconds = live.monitor_interval_seconds
        self.gauges = live_gauges()

    def handle(self, event: Event) -> None:
        if isinstance(event, ModelSelectedEvent):
            log.info("%s: new champion %s", event.identifier, event.payload.run_id)

    def tick(self) -> None:
        report = self.monitor.run_once()
        self.gauges.figures = report.figures
        for event in report.retrains:
            log.warning(
                "%s: retraining requested (%s, champion %s)",
                event.identifier,
                event.payload.reason.value,
                event.payload.champion_run_id,
            )
        if report.new_steps or report.scored or report.expired:
            log.info(
                "monitor: %d new forecast steps, %d scored, %d expired, %d waiting",
                report.new_steps,
                report.scored,
                report.expired,
                report.pending,
            )
