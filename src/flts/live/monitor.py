"""The live monitor: served forecasts (the ledger) joined with the actuals stations report
(the observation log), scored with the evaluator's own figures (:func:`flts.evaluation.score`).

Each pass (``flts worker monitor``, every ``live.monitor_interval_seconds``):

1. reads the ledger objects it has not read yet (``ledger/<day>/`` of the days since its
   last pass) into *pending* forecast steps;
2. for each identifier, reads the stored observations around the pending target times; a step
   whose actual (and whose origin's actual, the persistence forecast) is stored becomes
   *scored*; a step whose target time is further behind the newest stored row than
   ``live.late_window_minutes`` (or that was served longer ago than that) will never be
   scored and is counted as expired;
3. keeps the newest ``live.monitor_window`` scored steps per identifier, run and step, and
   computes per (identifier, run, model type, step): n, MAE per target, NRMSE (the paper's,
   mean over down/up), skill against persistence (1 - MASE) and interval coverage per level;
4. hands the steps it has just scored to the retraining triggers, when it has them
   (:class:`flts.live.triggers.RetrainTriggers`: drift detector and schedule);
5. saves its state (read ledger keys, pending and scored steps, the triggers' state) and the
   figures under ``monitor/``, so a restarted monitor goes on where it stopped and
   ``flts status`` reads the figures without recomputing them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from flts.data.spec import FeatureSpec
from flts.evaluation import score
from flts.events import RetrainRequestedEvent
from flts.live.ledger import LEDGER_ROOT, read_ledger
from flts.live.ledger import SUFFIX as LEDGER_SUFFIX
from flts.live.observations import ObservationLog
from flts.live.triggers import RetrainTriggers
from flts.storage import ObjectStore

MONITOR_ROOT = "monitor"
STATE_KEY = f"{MONITOR_ROOT}/state.json"
PENDING_KEY = f"{MONITOR_ROOT}/pending.parquet"
SCORED_KEY = f"{MONITOR_ROOT}/scored.parquet"
FIGURES_KEY = f"{MONITOR_ROOT}/live.json"
_GROUP = ["identifier", "run_id", "model_type", "step"]
#: What makes a forecast step unique: who served it, when, for which time.
_STEP_KEY = ["identifier", "run_id", "issued_at", "step", "time"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveFigure:
    """Live accuracy of one run of one identifier at one horizon step."""

    identifier: str
    run_id: str
    model_type: str
    step: int
    n: int
    nrmse: float
    skill: float | None
    mae: dict[str, float]
    coverage: dict[str, float] = field(default_factory=dict)


@dataclass
class PassReport:
    """What one pass did."""

    read_objects: int = 0
    new_steps: int = 0
    scored: int = 0
    expired: int = 0
    pending: int = 0
    figures: list[LiveFigure] = field(default_factory=list)
    retrains: list[RetrainRequestedEvent] = field(default_factory=list)


class LiveMonitor:
    """See module doc; ``run_once`` is one pass."""

    def __init__(
        self,
        store: ObjectStore,
        spec: FeatureSpec,
        *,
        window: int = 720,
        late_window: timedelta = timedelta(days=1),
        triggers: RetrainTriggers | None = None,
        observations: ObservationLog | None = None,
    ) -> None:
        self.store = store
        self.triggers = triggers
        self.spec = spec
        self.window = window
        self.late_window = pd.Timedelta(late_window)
        self.observations = observations or ObservationLog(store, spec)
        #: The figures of the last pass, None until a pass computed them.
        self.last_figures: list[LiveFigure] | None = None
        self.read_keys: set[str] = set()
        self.last_day: str | None = None
        self.pending = pd.DataFrame()
        self.scored = pd.DataFrame()
        self._load()

    # ------------------------------------------------------------------ one pass

    def run_once(self, now: datetime | None = None) -> PassReport:
        report = PassReport()
        now = now or datetime.now(UTC)
        fresh = self._read_ledger(now, report)
        naive_now = pd.Timestamp(now).tz_convert(None)  # ledger times are naive UTC
        pending = self.pending
        if len(fresh):
            pending = pd.concat([pending, fresh], ignore_index=True)
            if len(self.scored):  # read again after a crash: already scored
                seen = pd.MultiIndex.from_frame(self.scored[_STEP_KEY])
                pending = pending[~pd.MultiIndex.from_frame(pending[_STEP_KEY]).isin(seen)]
            pending = pending.drop_duplicates(_STEP_KEY)
        matched: list[pd.DataFrame] = []
        waiting: list[pd.DataFrame] = []
        if len(pending):
            for identifier, rows in pending.groupby("identifier", sort=True):
                done, left, expired = self._join(str(identifier), rows, naive_now)
                matched.append(done)
                waiting.append(left)
                report.expired += expired
        scored_now = pd.concat(matched, ignore_index=True) if matched else pd.DataFrame()
        report.scored = len(scored_now)
        self.pending = pd.concat(waiting, ignore_index=True) if waiting else pd.DataFrame()
        report.pending = len(self.pending)
        if len(scored_now):
            both = pd.concat([self.scored, scored_now], ignore_index=True)
            both = both.sort_values("time", kind="stable")
            self.scored = both.groupby(_GROUP, sort=False).tail(self.window).reset_index(drop=True)
        if self.triggers is not None:
            report.retrains = self.triggers.observe(scored_now, now)
        changed = report.read_objects or report.scored or report.expired or report.retrains
        if changed or self.last_figures is None:
            self.last_figures = self.figures()
            # A pass that read, scored, expired and triggered nothing changed no state: the
            # store keeps what the last pass wrote (its ``updated_at`` is when figures last
            # changed), so an idle fleet costs a few listings per pass, not rewrites.
            self._save(self.last_figures)
        elif self.triggers is not None:
            self.triggers.save()  # a schedule's clock may have started (else writes nothing)
        report.figures = self.last_figures
        return report

    def _read_ledger(self, now: datetime, report: PassReport) -> pd.DataFrame:
        """Ledger rows of the objects not read yet, from the day before the last pass on."""
        today = now.astimezone(UTC).date()
        first = today - timedelta(days=1)
        if self.last_day is not None:
            first = min(first, datetime.fromisoformat(self.last_day).date() - timedelta(days=1))
        days = [first + timedelta(days=i) for i in range((today - first).days + 1)]
        keys = [
            key
            for day in days
            for key in self.store.list(f"{LEDGER_ROOT}/{day.isoformat()}")
            if key.endswith(LEDGER_SUFFIX) and key not in self.read_keys
        ]
        spec = self.spec
        frames = [read_ledger(self.store.get(key), spec.targets, spec.time_column) for key in keys]
        # Keys of days that can no longer be listed again need not be remembered.
        keep = tuple(day.isoformat() for day in days)
        self.read_keys = {k for k in self.read_keys if k.split("/")[1] in keep} | set(keys)
        self.last_day = today.isoformat()
        report.read_objects = len(keys)
        fresh = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        report.new_steps = len(fresh)
        return fresh

    def _join(
        self, identifier: str, rows: pd.DataFrame, now: pd.Timestamp
    ) -> tuple[pd.DataFrame, pd.DataFrame, int]:
        """(scored steps with their actuals, steps still waiting, steps expired)."""
        step = self.spec.step
        times = pd.DatetimeIndex(rows["time"])
        origins = times - step * rows["step"].to_numpy()
        # Read on to the newest stored row (the pending targets are recent, so this is at
        # most a day more, from the log's cache): its time decides which steps expired.
        actuals = self.observations.read(identifier, start=origins.min())
        targets = list(self.spec.targets)
        truth = actuals[targets].reindex(times).to_numpy()
        origin = actuals[targets].reindex(origins).to_numpy()
        ready = ~(np.isnan(truth).any(axis=1) | np.isnan(origin).any(axis=1))
        done = rows[ready].copy()
        for i, target in enumerate(targets):
            done[f"{target}:actual"] = truth[ready, i]
            done[f"{target}:persistence"] = origin[ready, i]
        left = rows[~ready]
        expired = 0
        if len(left):
            # never coming: served longer ago than the late window, or for a time further
            # behind the station's newest row than a late row may be
            stale = np.asarray(pd.DatetimeIndex(left["issued_at"]) < now - self.late_window)
            if len(actuals):
                newest = actuals.index.max()
                stale |= np.asarray(pd.DatetimeIndex(left["time"]) < newest - self.late_window)
            expired = int(stale.sum())
            left = left[~stale]
        return done, left, expired

    # ------------------------------------------------------------------ figures

    def figures(self) -> list[LiveFigure]:
        """The live figures of every (identifier, run, model type, step) scored so far."""
        if self.scored.empty:
            return []
        targets = list(self.spec.targets)
        out = []
        for (identifier, run_id, model_type, step), rows in self.scored.groupby(_GROUP):
            shape = (len(rows), 1, len(targets))
            truth = rows[[f"{t}:actual" for t in targets]].to_numpy().reshape(shape)
            predicted = rows[targets].to_numpy().reshape(shape)
            baseline = rows[[f"{t}:persistence" for t in targets]].to_numpy().reshape(shape)
            bands = {}
            for level in _levels(rows, targets):
                lower = rows[[f"{t}:lower:{level}" for t in targets]].to_numpy().reshape(shape)
                upper = rows[[f"{t}:upper:{level}" for t in targets]].to_numpy().reshape(shape)
                bands[float(level)] = (lower, upper)
            scores = score(truth, predicted, targets, baseline=baseline, bands=bands)
            out.append(
                LiveFigure(
                    identifier=str(identifier),
                    run_id=str(run_id),
                    model_type=str(model_type),
                    step=int(str(step)),
                    n=len(rows),
                    nrmse=scores.nrmse,
                    skill=None if scores.mase is None else 1.0 - scores.mase,
                    mae={t: s.mae for t, s in scores.per_target.items()},
                    coverage=scores.coverage,
                )
            )
        return out

    # ------------------------------------------------------------------ state

    def _save(self, figures: list[LiveFigure]) -> None:
        """Steps and triggers first, the read ledger keys last: a crash in between makes the
        next pass read some objects again, whose steps are then dropped as duplicates
        (:data:`_STEP_KEY`) or, scored again, skipped by the triggers (``fed_until``)."""
        for key, frame in ((PENDING_KEY, self.pending), (SCORED_KEY, self.scored)):
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            self.store.put_atomic(key, buffer.getvalue())
        if self.triggers is not None:
            self.triggers.save()
        state = {"read_keys": sorted(self.read_keys), "last_day": self.last_day}
        self.store.put_atomic(STATE_KEY, json.dumps(state).encode())
        document = {
            "updated_at": datetime.now(UTC).isoformat(),
            "figures": [asdict(figure) for figure in figures],
        }
        self.store.put_atomic(FIGURES_KEY, json.dumps(document, sort_keys=True).encode())

    def _load(self) -> None:
        try:
            state = json.loads(self.store.get(STATE_KEY))
        except KeyError:
            return
        self.read_keys = set(state.get("read_keys", []))
        self.last_day = state.get("last_day")
        for key, name in ((PENDING_KEY, "pending"), (SCORED_KEY, "scored")):
            with contextlib.suppress(KeyError):  # a pass that saved the state saved these too
                setattr(self, name, pd.read_parquet(io.BytesIO(self.store.get(key))))


def read_figures(store: ObjectStore) -> dict[str, Any] | None:
    """The monitor's latest figures (``flts status``), None before its first pass."""
    try:
        document: dict[str, Any] = json.loads(store.get(FIGURES_KEY))
    except KeyError:
        return None
    return document


def _levels(rows: pd.DataFrame, targets: list[str]) -> list[str]:
    """Interval levels every row of ``rows`` carries for every target."""
    found = {c.rsplit(":", 1)[1] for c in rows.columns if c.startswith(f"{targets[0]}:lower:")}
    return sorted(
        level
        for level in found
        if all(
            f"{t}:{side}:{level}" in rows and rows[f"{t}:{side}:{level}"].notna().all()
            for t in targets
            for side in ("lower", "upper")
        )
    )
