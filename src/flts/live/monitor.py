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

**Shards** (``live.monitor_shard``, the forms of ``serving.shard``: :class:`flts.shards.Shard`).
One monitor keeps up with a few thousand stations; a larger fleet runs one monitor per shard
of identifiers. A shard keeps only its identifiers' ledger rows (dropped while the ledger is
parsed, before rows are built), so it reads only their observations and runs the triggers
only for them; its state and figures live under ``monitor/shards/<k>-of-<n>/`` (a listed
shard: ``monitor/shards/list-<digest>/``), so shards never overwrite each other, and
:func:`read_figures` merges every shard's figures. Unsharded, the keys are the ones above.
A monitor with no state of its own yet (a new layout) starts from every other monitor state
it finds, its own identifiers only (:meth:`LiveMonitor._adopt`).
"""

from __future__ import annotations

import contextlib
import hashlib
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
from flts.exceptions import ConfigurationError
from flts.live.ledger import LEDGER_ROOT, read_ledger
from flts.live.ledger import SUFFIX as LEDGER_SUFFIX
from flts.live.observations import ObservationLog
from flts.live.triggers import RetrainTriggers
from flts.shards import Shard, shard_of
from flts.storage import ObjectStore

MONITOR_ROOT = "monitor"
#: Where each monitor shard keeps its state: ``monitor/shards/<shard name>/``.
SHARDS_ROOT = f"{MONITOR_ROOT}/shards"
STATE_KEY = f"{MONITOR_ROOT}/state.json"
PENDING_KEY = f"{MONITOR_ROOT}/pending.parquet"
SCORED_KEY = f"{MONITOR_ROOT}/scored.parquet"
FIGURES_KEY = f"{MONITOR_ROOT}/live.json"
_GROUP = ["identifier", "run_id", "model_type", "step"]
#: What makes a forecast step unique: who served it, when, for which time.
_STEP_KEY = ["identifier", "run_id", "issued_at", "step", "time"]

log = logging.getLogger(__name__)


def shard_name(shard: Shard) -> str | None:
    """The folder of ``shard`` under :data:`SHARDS_ROOT`: ``<k>-of-<n>``, ``list-<digest>``
    for a listed shard (a digest of its sorted identifiers: any order, one folder), or
    ``None`` for the whole fleet (whose keys stay ``monitor/...``)."""
    if shard.members is not None:
        joined = ",".join(sorted(shard.members)).encode()
        return f"list-{hashlib.sha1(joined, usedforsecurity=False).hexdigest()[:12]}"
    return None if shard.everything else f"{shard.index}-of-{shard.count}"


def shard_text(shard: Shard) -> str | None:
    """``shard`` as ``live.monitor_shard`` spells it (``Shard.parse`` reads it back)."""
    if shard.members is not None:
        return ",".join(sorted(shard.members))
    return None if shard.everything else f"{shard.index}/{shard.count}"


@dataclass(frozen=True)
class MonitorKeys:
    """The objects of one monitor: the unsharded one's under ``monitor/``, a shard's under
    ``monitor/shards/<name>/``."""

    root: str = MONITOR_ROOT

    @classmethod
    def of(cls, shard: Shard) -> MonitorKeys:
        name = shard_name(shard)
        return cls() if name is None else cls(f"{SHARDS_ROOT}/{name}")

    @property
    def state(self) -> str:
        return f"{self.root}/state.json"

    @property
    def pending(self) -> str:
        return f"{self.root}/pending.parquet"

    @property
    def scored(self) -> str:
        return f"{self.root}/scored.parquet"

    @property
    def figures(self) -> str:
        return f"{self.root}/live.json"

    @property
    def triggers_state(self) -> str:
        return f"{self.root}/triggers-state.json"


UNSHARDED = MonitorKeys()


def monitor_roots(store: ObjectStore) -> list[MonitorKeys]:
    """Every monitor's keys that may hold objects: the unsharded one first, then each shard
    folder found under :data:`SHARDS_ROOT` (one listing)."""
    names = sorted({key.split("/")[2] for key in store.list(SHARDS_ROOT) if key.count("/") >= 3})
    return [UNSHARDED, *(MonitorKeys(f"{SHARDS_ROOT}/{name}") for name in names)]


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
        shard: Shard | None = None,
    ) -> None:
        self.store = store
        self.shard = shard or Shard()
        self.keys = MonitorKeys.of(self.shard)
        self.triggers = triggers
        if triggers is not None and triggers.state_key != self.keys.triggers_state:
            raise ValueError(
                f"the triggers keep their state at {triggers.state_key}, "
                f"this monitor's is {self.keys.triggers_state}"
            )
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
        keep = None if self.shard.everything else self.shard.owns
        frames = [
            read_ledger(self.store.get(key), spec.targets, spec.time_column, keep) for key in keys
        ]
        # Keys of days that can no longer be listed again need not be remembered.
        listed = tuple(day.isoformat() for day in days)
        self.read_keys = {k for k in self.read_keys if k.split("/")[1] in listed} | set(keys)
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
        keys = self.keys
        for key, frame in ((keys.pending, self.pending), (keys.scored, self.scored)):
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            self.store.put_atomic(key, buffer.getvalue())
        if self.triggers is not None:
            self.triggers.save()
        state = {"read_keys": sorted(self.read_keys), "last_day": self.last_day}
        self.store.put_atomic(keys.state, json.dumps(state).encode())
        document: dict[str, Any] = {
            "updated_at": datetime.now(UTC).isoformat(),
            "figures": [asdict(figure) for figure in figures],
        }
        text = shard_text(self.shard)
        if text is not None:  # who wrote it: read_figures and owner lookups read it back
            document["shard"] = text
        self.store.put_atomic(keys.figures, json.dumps(document, sort_keys=True).encode())

    def _load(self) -> None:
        try:
            state = json.loads(self.store.get(self.keys.state))
        except KeyError:
            self._adopt()
            return
        self.read_keys = set(state.get("read_keys", []))
        self.last_day = state.get("last_day")
        for key, name in ((self.keys.pending, "pending"), (self.keys.scored, "scored")):
            with contextlib.suppress(KeyError):  # a pass that saved the state saved these too
                setattr(self, name, pd.read_parquet(io.BytesIO(self.store.get(key))))

    def _adopt(self) -> None:
        """A monitor's first start on a store other monitors used (a new layout: one monitor
        become n shards, n become m, or back to one): take its identifiers' steps and trigger
        watches from every other monitor state found, so the figures go on from their window
        and no trigger starts again from zero (:meth:`RetrainTriggers.adopt`). Safe against
        the others' read positions differing: a ledger object counts as read only when every
        one of them had read it (reading one again only adds steps dropped as duplicates),
        from the earliest day."""
        states: list[dict[str, Any]] = []
        pending: list[pd.DataFrame] = []
        scored: list[pd.DataFrame] = []
        for keys in monitor_roots(self.store):
            if keys == self.keys:
                continue
            try:
                states.append(json.loads(self.store.get(keys.state)))
            except (KeyError, ValueError):
                continue
            for key, frames in ((keys.pending, pending), (keys.scored, scored)):
                with contextlib.suppress(KeyError):
                    frame = pd.read_parquet(io.BytesIO(self.store.get(key)))
                    if len(frame) and "identifier" in frame:
                        owned = frame["identifier"].astype(str).map(self.shard.owns)
                        frames.append(frame[owned.to_numpy(dtype=bool)])
            if self.triggers is not None:
                self.triggers.adopt(keys.triggers_state, self.shard.owns)
        if not states:
            return  # the first monitor of this store: nothing to go on from
        # A state left behind by a monitor stopped long ago (an older layout) would send the
        # read position back to its day: only the monitors that ran lately place it.
        days = [str(state["last_day"]) for state in states if state.get("last_day")]
        recent = (
            (datetime.fromisoformat(max(days)) - timedelta(days=1)).date().isoformat()
            if days
            else ""
        )
        placing = [s for s in states if str(s.get("last_day") or "") >= recent]
        self.read_keys = set.intersection(*(set(s.get("read_keys", [])) for s in placing))
        self.last_day = min(
            (str(s["last_day"]) for s in placing if s.get("last_day")), default=None
        )
        if pending:
            self.pending = pd.concat(pending, ignore_index=True).drop_duplicates(_STEP_KEY)
        if scored:
            both = pd.concat(scored, ignore_index=True).drop_duplicates(_STEP_KEY)
            both = both.sort_values("time", kind="stable")
            self.scored = both.groupby(_GROUP, sort=False).tail(self.window).reset_index(drop=True)
        log.info(
            "monitor %s: went on from the other monitors' state (%d pending, %d scored steps)",
            self.keys.root,
            len(self.pending),
            len(self.scored),
        )


def read_figures(store: ObjectStore) -> dict[str, Any] | None:
    """The monitor's latest figures (``flts status``, the dashboard, ``GET /v1/fleet``), None
    before any monitor's first pass: the union of every shard's figures and the unsharded
    monitor's (one listing and a read per shard).

    ``updated_at`` is the oldest of the contributing documents': a shard that stopped (or
    lags) must show as stale figures, not hide behind its busier siblings' fresh time.
    When two documents hold one identifier (a layout changed: the old monitor's figures stay
    until its objects are removed), the newer document's figures of it win, and the older
    document counts towards ``updated_at`` only when it still contributes an identifier. An
    unsharded store's document is returned as written."""
    documents: list[dict[str, Any]] = []
    for keys in monitor_roots(store):
        try:
            document = json.loads(store.get(keys.figures))
        except (KeyError, ValueError):  # not written yet, or removed while listing
            continue
        if isinstance(document, dict):
            documents.append(document)
    if len(documents) <= 1 and all("shard" not in d for d in documents):
        return documents[0] if documents else None
    documents.sort(key=lambda d: str(d.get("updated_at", "")), reverse=True)  # newest first
    owner: dict[str, int] = {}
    for position, document in enumerate(documents):
        for figure in document.get("figures", []):
            owner.setdefault(str(figure["identifier"]), position)
    used = sorted(set(owner.values())) or list(range(len(documents)))
    figures = [
        figure
        for position in used
        for figure in documents[position].get("figures", [])
        if owner.get(str(figure["identifier"])) == position
    ]
    figures.sort(key=lambda f: (f["identifier"], f["run_id"], f["model_type"], int(f["step"])))
    return {
        "updated_at": min(str(documents[position]["updated_at"]) for position in used),
        "figures": figures,
        "shards": [documents[position].get("shard") for position in used],
    }


def monitor_steps(store: ObjectStore, identifier: str) -> pd.DataFrame:
    """The forecast steps (scored and pending) the monitor holds for ``identifier``, read from
    the monitor that owns it: the unsharded one's and that of the shard whose name (or, for a
    listed shard, figures document) says it owns ``identifier``; never another shard's."""
    frames = []
    for keys in monitor_roots(store):
        if keys != UNSHARDED and not _owns(store, keys, identifier):
            continue
        for key in (keys.scored, keys.pending):
            try:
                frame = pd.read_parquet(io.BytesIO(store.get(key)))
            except KeyError:
                continue
            if len(frame) and "identifier" in frame:
                frames.append(frame[frame["identifier"] == identifier])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _owns(store: ObjectStore, keys: MonitorKeys, identifier: str) -> bool:
    """Whether the shard keeping its objects under ``keys`` owns ``identifier``."""
    name = keys.root.rsplit("/", 1)[-1]
    index, _, count = name.partition("-of-")
    if index.isdigit() and count.isdigit() and int(count) > 0:
        return shard_of(identifier, int(count)) == int(index)
    try:  # a listed shard: its figures document names its identifiers
        text = json.loads(store.get(keys.figures)).get("shard")
    except (KeyError, ValueError, AttributeError):
        return False
    try:
        return isinstance(text, str) and Shard.parse(text, "live.monitor_shard").owns(identifier)
    except ConfigurationError:
        return False


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
