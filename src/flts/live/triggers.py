"""Retraining triggers: drift, schedule and manual requests, one ``retrain-requested`` event
each, and the append-only record of every trigger and its outcome (docs/architecture.md,
rule 18).

Layout in the object store::

    monitor/triggers-state.json                        detectors and schedule marks
    monitor/shards/<shard>/triggers-state.json         the same, of a monitor shard
    monitor/triggers/<identifier>/<event_id>/request.json   created once by whoever asked
    monitor/triggers/<identifier>/<event_id>/outcome.json   created once by preprocess

:class:`RetrainTriggers` runs inside the monitor's pass (:class:`flts.live.monitor.LiveMonitor`)
on the steps it has just scored, per identifier:

* **drift**: a :class:`~flts.live.drift.DriftDetector` on the current champion's step-1
  forecasts, their errors over its evaluation MAE5 and the hourly profile of its test split
  (a new champion, a new detector); after an alarm it is silent for
  ``live.drift_cooldown_minutes``;
* **schedule**: every ``live.retrain_every_hours`` (wall clock) and/or every
  ``live.retrain_every_rows`` new observation rows, counted from the first pass that saw the
  identifier, then from the last scheduled trigger.

**Neither lost nor repeated across a restart.** The state is saved before the monitor's read
position, so a crash makes the next pass score the same steps again: the detector skips target
times it was already fed (``fed_until``). A trigger's event id follows from the identifier,
the champion and the trigger's sequence number, so a trigger published just before a crash is
published again under the same id (consumers drop it as a duplicate) and its record is created
once.
"""

from __future__ import annotations

import io
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from flts.bus import Bus
from flts.data.processed import ProcessedKeys
from flts.data.spec import FeatureSpec
from flts.events import (
    RETRAIN_REQUESTED,
    EvidenceValue,
    RetrainReason,
    RetrainRequested,
    RetrainRequestedEvent,
    new_event,
)
from flts.live.drift import DriftDetector, DriftSettings, hourly_profile
from flts.live.observations import ObservationLog
from flts.promotion import PromotionStore
from flts.promotion.decisions import read_decision
from flts.storage import ObjectStore

TRIGGERS_ROOT = "monitor/triggers"
TRIGGERS_STATE_KEY = "monitor/triggers-state.json"
#: Namespace of the deterministic event ids of monitor triggers.
_IDS = uuid.UUID("6f1c2b9e-0d4a-4f57-9a63-5b7f1e2d8c40")

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- records


def _record_key(identifier: str, event_id: str, part: str) -> str:
    return f"{TRIGGERS_ROOT}/{identifier}/{event_id}/{part}.json"


def request_retrain(
    store: ObjectStore,
    bus: Bus,
    identifier: str,
    reason: RetrainReason,
    *,
    champion_run_id: str | None,
    evidence: dict[str, EvidenceValue] | None = None,
    note: str | None = None,
    event_id: str | None = None,
    now: datetime | None = None,
) -> RetrainRequestedEvent:
    """Record the trigger, then publish its ``retrain-requested`` event (recorded before it
    is announced, so the status never misses a request that was acted on)."""
    payload = RetrainRequested(
        reason=reason, evidence=evidence or {}, champion_run_id=champion_run_id, note=note
    )
    event = new_event(payload, identifier=identifier, event_id=event_id)
    assert isinstance(event, RetrainRequestedEvent)
    document = {
        "event_id": event.event_id,
        "identifier": identifier,
        "requested_at": (now or event.occurred_at).isoformat(),
        **payload.model_dump(mode="json"),
    }
    store.put_if_absent(
        _record_key(identifier, event.event_id, "request"), json.dumps(document).encode()
    )
    bus.publish(RETRAIN_REQUESTED, event)
    log.info(
        "%s: retraining requested (%s) %s",
        identifier,
        reason.value,
        payload.evidence,
        extra={"event": "retrain-requested", "identifier": identifier},
    )
    return event


def record_outcome(store: ObjectStore, event: RetrainRequestedEvent, **outcome: Any) -> None:
    """What preprocess made of a request (``status``: ``prepared`` with the dataset id and
    config hash, or ``refused`` with the reason); created once."""
    document = {"event_id": event.event_id, "at": datetime.now(UTC).isoformat(), **outcome}
    store.put_if_absent(
        _record_key(event.identifier, event.event_id, "outcome"), json.dumps(document).encode()
    )


def read_triggers(store: ObjectStore, identifier: str | None = None) -> list[dict[str, Any]]:
    """Every recorded trigger (oldest first) with its outcome and, once the evaluator has
    decided on the config hash it produced, whether that promoted a new champion."""
    prefix = TRIGGERS_ROOT if identifier is None else f"{TRIGGERS_ROOT}/{identifier}"
    found: dict[str, dict[str, Any]] = {}
    for key in store.list(prefix):
        folder, _, name = key.rpartition("/")
        if name not in ("request.json", "outcome.json"):
            continue
        try:
            document = store.get_json(key)
        except (KeyError, ValueError):  # removed, or damaged: the others still show
            continue
        found.setdefault(folder, {})[name.removesuffix(".json")] = document
    entries = []
    for parts in found.values():
        request = parts.get("request")
        if request is None:
            continue
        outcome = parts.get("outcome")
        promoted = None
        if outcome and outcome.get("config_hash"):
            decision = read_decision(store, request["identifier"], outcome["config_hash"])
            if decision is not None and decision.get("state") == "done":
                promoted = decision.get("champion") is not None
        entries.append({**request, "outcome": outcome, "promoted": promoted})
    return sorted(entries, key=lambda e: str(e["requested_at"]))


# ----------------------------------------------------------------------------- triggers


@dataclass
class _Watch:
    """One identifier's trigger state."""

    run_id: str | None = None  # the champion the detector watches
    detector: dict[str, Any] = field(default_factory=dict)
    profile: list[float] | None = None  # the champion's test split, hour by hour
    fed_until: str | None = None  # newest target time fed to the detector
    silent_until: str | None = None  # drift cooldown end (wall clock)
    alarms: int = 0  # drift triggers of this champion
    scheduled_at: str | None = None  # wall clock of the last scheduled trigger (or first seen)
    rows_mark: str | None = None  # newest observation then
    schedules: int = 0


@dataclass(frozen=True)
class Schedule:
    """``live.retrain_every_hours`` / ``live.retrain_every_rows``; both ``None``: off."""

    every: timedelta | None = None
    every_rows: int | None = None


DEFAULT_DRIFT = DriftSettings()
NO_SCHEDULE = Schedule()


_NEVER = pd.Timestamp.min.tz_localize(UTC)


def _instant(text: str | None) -> pd.Timestamp:
    """A watch's stored time as a UTC timestamp (naive ones are UTC), the earliest if unset,
    so the times of two states compare whichever way each was written."""
    if text is None:
        return _NEVER
    stamp = pd.Timestamp(text)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


class RetrainTriggers:
    """Drift and schedule triggers for the monitor (see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        bus: Bus,
        spec: FeatureSpec,
        *,
        drift: DriftSettings | None = DEFAULT_DRIFT,
        cooldown: timedelta = timedelta(hours=6),
        schedule: Schedule = NO_SCHEDULE,
        observations: ObservationLog | None = None,
        state_key: str = TRIGGERS_STATE_KEY,
    ) -> None:
        self.store = store
        self.state_key = state_key  # a monitor shard's own (live.monitor_shard)
        self.bus = bus
        self.spec = spec
        self.drift = drift
        self.cooldown = cooldown
        self.schedule = schedule
        self.observations = observations or ObservationLog(store, spec)
        self.promotions = PromotionStore(store)
        self.watches: dict[str, _Watch] = {}
        self._saved: bytes | None = None  # the state as last read or written
        self._load()

    def observe(self, scored: pd.DataFrame, now: datetime) -> list[RetrainRequestedEvent]:
        """Run the detectors on ``scored`` (steps scored in this pass) and the schedule for
        every identifier seen so far; the events published."""
        fresh = set() if scored.empty else set(scored["identifier"].astype(str))
        published: list[RetrainRequestedEvent] = []
        for identifier in sorted(fresh | set(self.watches)):
            champion = self.promotions.current(identifier)
            if champion is None:
                continue
            watch = self.watches.setdefault(identifier, _Watch())
            if watch.run_id != champion.run_id:  # a new champion: a new detector
                watch.run_id, watch.detector, watch.fed_until = champion.run_id, {}, None
                watch.silent_until, watch.alarms = None, 0
                watch.profile = self._profile(champion.config_hash)
            if self.drift is not None and identifier in fresh:
                mae5 = champion.scores.get("mae5")
                rows = scored[scored["identifier"] == identifier]
                event = self._drift(identifier, watch, rows, mae5, now)
                if event is not None:
                    published.append(event)
            event = self._scheduled(identifier, watch, now)
            if event is not None:
                published.append(event)
        return published

    def _drift(
        self,
        identifier: str,
        watch: _Watch,
        rows: pd.DataFrame,
        mae5: float | None,
        now: datetime,
    ) -> RetrainRequestedEvent | None:
        assert self.drift is not None
        if mae5 is None or not math.isfinite(mae5) or mae5 <= 0 or watch.run_id is None:
            return None  # no evaluation error to compare with (a manual promotion of old)
        mine = rows[(rows["run_id"] == watch.run_id) & (rows["step"] == 1)]
        mine = mine.sort_values("time", kind="stable").drop_duplicates("time")
        if watch.fed_until is not None:
            mine = mine[pd.DatetimeIndex(mine["time"]) > pd.Timestamp(watch.fed_until)]
        if mine.empty:
            return None
        targets = list(self.spec.targets)
        predicted = np.clip(mine[targets].to_numpy(np.float64), 0.0, None)
        actual = mine[[f"{t}:actual" for t in targets]].to_numpy(np.float64)
        times = pd.DatetimeIndex(mine["time"])
        hardness = np.asarray(watch.profile or [1.0] * 24)[times.hour.to_numpy()]
        ratios = np.abs(predicted - actual).mean(axis=1) / (mae5 * hardness)
        watch.fed_until = times.max().isoformat()
        if watch.silent_until is not None and now < datetime.fromisoformat(watch.silent_until):
            return None
        detector = DriftDetector.from_state(self.drift, watch.detector)
        event = None
        for time, ratio in zip(times, ratios, strict=True):
            alarm = detector.update(float(ratio))
            if alarm is None:
                continue
            evidence: dict[str, EvidenceValue] = {
                **alarm.evidence(),
                "threshold": self.drift.threshold,
                "evaluation_mae5": mae5,
                "live_mae5": alarm.live_ratio * mae5,
                "at": time.isoformat(),
            }
            event = request_retrain(
                self.store,
                self.bus,
                identifier,
                RetrainReason.DRIFT,
                champion_run_id=watch.run_id,
                evidence=evidence,
                event_id=str(uuid.uuid5(_IDS, f"{identifier}/{watch.run_id}/drift/{watch.alarms}")),
                now=now,
            )
            watch.alarms += 1
            watch.silent_until = (now + self.cooldown).isoformat()
            break  # silent for the rest of this pass's steps too
        watch.detector = detector.state()
        return event

    def _profile(self, config_hash: str) -> list[float] | None:
        """The hourly profile of the champion's test split (``None``: split gone, flat)."""
        try:
            data = self.store.get(ProcessedKeys.for_hash(config_hash).test_key)
        except KeyError:
            return None
        return hourly_profile(pd.read_parquet(io.BytesIO(data)), list(self.spec.targets))

    def _scheduled(
        self, identifier: str, watch: _Watch, now: datetime
    ) -> RetrainRequestedEvent | None:
        every, every_rows = self.schedule.every, self.schedule.every_rows
        if every is None and every_rows is None:
            return None
        evidence: dict[str, EvidenceValue] = {}
        if every is not None:
            if watch.scheduled_at is None:
                watch.scheduled_at = now.isoformat()  # the clock starts when first seen
            elif now - datetime.fromisoformat(watch.scheduled_at) >= every:
                evidence["hours"] = every.total_seconds() / 3600
        newest = self.observations.newest(identifier) if every_rows is not None else None
        if every_rows is not None and newest is not None:
            if watch.rows_mark is None:
                watch.rows_mark = newest.isoformat()
            else:
                since = pd.Timestamp(watch.rows_mark) + self.spec.step
                rows = len(self.observations.read(identifier, start=since, end=newest))
                if rows >= every_rows:
                    evidence["rows"] = rows
        if not evidence:
            return None
        event = request_retrain(
            self.store,
            self.bus,
            identifier,
            RetrainReason.SCHEDULE,
            champion_run_id=watch.run_id,
            evidence=evidence,
            event_id=str(uuid.uuid5(_IDS, f"{identifier}/schedule/{watch.schedules}")),
            now=now,
        )
        watch.schedules += 1
        watch.scheduled_at = now.isoformat()
        if newest is not None:
            watch.rows_mark = newest.isoformat()
        return event

    # ------------------------------------------------------------------ state

    def save(self) -> None:
        """Write the state when it differs from what was last read or written."""
        document = {name: vars(watch) for name, watch in sorted(self.watches.items())}
        data = json.dumps(document).encode()
        if data != self._saved:
            self.store.put_atomic(self.state_key, data)
            self._saved = data

    def adopt(self, key: str, owns: Callable[[str], bool]) -> int:
        """Take over the watches of the identifiers ``owns`` accepts from another monitor's
        state at ``key`` (a new shard layout starting from the old one's); the number of
        watches taken or changed (one this monitor had, merged with the other state's).

        Not only a courtesy: a trigger's event id follows from its sequence number, so a
        watch started again from zero would publish ids already used, which consumers drop
        as duplicates, and the identifier would not be retrained until the count caught up.
        Of two watches for one identifier the one on the current champion wins (otherwise
        the fresher one, see :meth:`_merged`); its schedule count is the higher of the two
        whichever wins, its alarm count only when both watch the same champion."""
        try:
            document = json.loads(self.store.get(key))
        except (KeyError, ValueError):
            return 0
        changed = 0
        for name, state in document.items():
            if not owns(name):
                continue
            watch = _Watch(**state)
            mine = self.watches.get(name)
            merged = watch if mine is None else self._merged(name, mine, watch)
            if mine is None or vars(merged) != vars(mine):
                self.watches[name] = merged
                changed += 1
        return changed

    def _merged(self, identifier: str, mine: _Watch, theirs: _Watch) -> _Watch:
        """One watch of two for ``identifier``.

        Drift event ids name the champion and its alarm count, which :meth:`observe` resets
        on a champion change: a stale watch on an older champion winning by its higher count
        would be reset on the next pass and publish the current champion's drift ids again
        (a stale detector state and schedule clock with it). So the watch on the current
        champion wins, else the fresher one (fed further, then scheduled later), else the
        one further on. The schedule ids do not name the champion: that count is the higher
        of the two; the alarm count too when both watch the same champion."""
        champion: str | None = None
        if mine.run_id != theirs.run_id:
            current = self.promotions.current(identifier)
            champion = None if current is None else current.run_id

        def rank(watch: _Watch) -> tuple[bool, pd.Timestamp, pd.Timestamp, int]:
            return (
                champion is not None and watch.run_id == champion,
                _instant(watch.fed_until),
                _instant(watch.scheduled_at),
                watch.alarms + watch.schedules,
            )

        chosen, other = (theirs, mine) if rank(theirs) > rank(mine) else (mine, theirs)
        merged = _Watch(**vars(chosen))
        merged.schedules = max(chosen.schedules, other.schedules)
        if chosen.run_id == other.run_id:
            merged.alarms = max(chosen.alarms, other.alarms)
        return merged

    def _load(self) -> None:
        try:
            self._saved = self.store.get(self.state_key)
        except KeyError:
            return
        document = json.loads(self._saved)
        self.watches = {name: _Watch(**state) for name, state in document.items()}
