"""The forecast ledger and the live monitor on an in-memory store: recorded answers become
ledger rows, the monitor scores each step once its actual (and persistence's) is stored, with
the evaluator's own figures, keeps waiting for the rest, expires what can never arrive, and a
restarted monitor goes on where the last one stopped.

The monitor in shards (``live.monitor_shard``): two shards over one store score, between
them, exactly what one monitor scores over a copy of it, each reading only its own
identifiers' observations and keeping its state apart; the figures read back are the union;
each shard triggers for its identifiers only; and a new layout goes on from the old one's
state instead of starting its triggers again from zero (their event ids would repeat)."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pydantic
import pytest

from flts.bus.memory import MemoryBus
from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.evaluation import score
from flts.live.ledger import ForecastLedger
from flts.live.monitor import (
    FIGURES_KEY,
    SHARDS_ROOT,
    STATE_KEY,
    LiveMonitor,
    MonitorKeys,
    monitor_steps,
    read_figures,
)
from flts.live.observations import OBSERVATIONS_ROOT, ObservationLog
from flts.live.triggers import RetrainTriggers, Schedule
from flts.promotion import Promotion, PromotionStore
from flts.settings import LiveSettings
from flts.shards import Shard
from flts.storage import ObjectStore
from helpers import CountingStore, memory_settings

SPEC = FeatureSpec()
TARGETS = SPEC.targets
SERIES = validate_rows(synthetic_traffic(600, seed=11), SPEC)
# The ledger files its objects under the wall-clock day they are written, so the passes run
# "now" too (the monitor lists the days up to the pass time).
NOW = datetime.now(UTC)


def answer(
    origin: int, horizon: int, rng: np.random.Generator, run: str = "r1", identifier: str = "S1"
) -> dict[str, Any]:
    """A row-form answer issued at row ``origin`` of :data:`SERIES`: the actuals plus noise,
    with an 80% band of +-10%."""
    records, band = [], []
    for step in range(1, horizon + 1):
        when = SERIES.index[origin] + SPEC.step * step
        actual = SERIES.loc[when, list(TARGETS)].to_numpy() if when in SERIES.index else None
        values = (actual if actual is not None else np.ones(len(TARGETS))) * rng.uniform(
            0.8, 1.2, len(TARGETS)
        )
        records.append(
            {"time": when.isoformat(), **dict(zip(TARGETS, values.tolist(), strict=True))}
        )
        band.append(
            {
                "time": when.isoformat(),
                **{
                    t: [float(v) * 0.9, float(v) * 1.1]
                    for t, v in zip(TARGETS, values, strict=True)
                },
            }
        )
    model = {"identifier": identifier, "run_id": run, "model_type": "RIDGE", "config_hash": "c0"}
    return {"forecast": records, "model": model, "intervals": {"80": band}}


def offline(answers: list[dict[str, Any]], step: int) -> tuple[float, float | None, float]:
    """NRMSE, skill and 80% coverage of ``answers`` at ``step`` computed straight from them."""
    rows = [a["forecast"][step - 1] for a in answers]
    bands = [a["intervals"]["80"][step - 1] for a in answers]
    times = pd.DatetimeIndex([r["time"] for r in rows])
    truth = SERIES.loc[times, list(TARGETS)].to_numpy()[:, None]
    origin = SERIES.loc[times - SPEC.step * step, list(TARGETS)].to_numpy()[:, None]
    pred = np.array([[r[t] for t in TARGETS] for r in rows])[:, None]
    low = np.array([[b[t][0] for t in TARGETS] for b in bands])[:, None]
    high = np.array([[b[t][1] for t in TARGETS] for b in bands])[:, None]
    s = score(truth, pred, TARGETS, baseline=origin, bands={80.0: (low, high)})
    return s.nrmse, None if s.mase is None else 1 - s.mase, s.coverage["80"]


@pytest.fixture
def store() -> ObjectStore:
    return ObjectStore(f"memory://{uuid.uuid4().hex}")


def test_served_forecasts_are_scored_as_their_actuals_arrive(store: ObjectStore) -> None:
    rng = np.random.default_rng(3)
    log = ObservationLog(store, SPEC)
    log.append("S1", SERIES.iloc[:100])
    ledger = ForecastLedger(store, "replica-a")
    answers = [answer(origin, 3, rng) for origin in range(90, 120)]
    for item in answers:
        ledger.record(orjson.dumps(item))
    assert ledger.flush() is not None
    monitor = LiveMonitor(store, SPEC)
    first = monitor.run_once(NOW)
    assert first.new_steps == 90
    # actuals stored up to row 99: origins 90..96 reach it at step 3, 90..98 at step 1
    assert first.scored == 9 + 8 + 7
    assert first.pending == 90 - first.scored

    log.append("S1", SERIES.iloc[100:130])  # the rest arrives
    second = monitor.run_once(NOW)
    assert (second.new_steps, second.scored, second.pending) == (0, 90 - first.scored, 0)
    figures = {f.step: f for f in second.figures}
    assert sorted(figures) == [1, 2, 3]
    for step, figure in figures.items():
        nrmse, skill, coverage = offline(answers, step)
        assert figure.n == 30
        assert figure.nrmse == pytest.approx(nrmse, rel=1e-9)
        assert figure.skill == pytest.approx(skill, rel=1e-9)
        assert figure.coverage["80"] == pytest.approx(coverage)
    stored = read_figures(store)
    assert stored is not None
    assert len(stored["figures"]) == 3


def test_a_restarted_monitor_goes_on_and_expires_what_never_arrives(store: ObjectStore) -> None:
    rng = np.random.default_rng(4)
    log = ObservationLog(store, SPEC)
    log.append("S1", SERIES.iloc[:50])
    ledger = ForecastLedger(store, "replica-a")
    for origin in range(40, 60):
        ledger.record(orjson.dumps(answer(origin, 1, rng)))
    ledger.flush()
    before = LiveMonitor(store, SPEC, late_window=timedelta(hours=1)).run_once(NOW)
    assert (before.scored, before.pending) == (9, 11)

    late = ForecastLedger(store, "replica-b")
    for origin in range(60, 70):
        late.record(orjson.dumps(answer(origin, 1, rng)))
    late.flush()  # another replica, after the restart
    # rows 50..54 never come: targets 50..54 (no actual) and 55 (no persistence origin) expire
    log.append("S1", SERIES.iloc[55:200])
    restarted = LiveMonitor(store, SPEC, late_window=timedelta(hours=1))
    after = restarted.run_once(NOW + timedelta(minutes=1))
    assert after.read_objects == 1  # the first replica's object is not read twice
    assert after.expired == 6  # more than an hour behind the newest row (199)
    assert after.scored == 5 + 10  # targets 56..60, then the new replica's 61..70
    [figure] = after.figures
    assert figure.n == 9 + 5 + 10


def test_a_pass_with_nothing_new_writes_nothing(store: ObjectStore) -> None:
    """An idle fleet must not cost a rewrite of the monitor's objects every pass."""
    rng = np.random.default_rng(5)
    ObservationLog(store, SPEC).append("S1", SERIES.iloc[:60])
    ledger = ForecastLedger(store, "replica-a")
    for origin in range(40, 50):
        ledger.record(orjson.dumps(answer(origin, 1, rng)))
    ledger.flush()
    monitor = LiveMonitor(store, SPEC)
    assert monitor.run_once(NOW).scored == 10
    written = {key: store.get(key) for key in store.list("monitor")}
    idle = monitor.run_once(NOW + timedelta(seconds=30))
    assert (idle.read_objects, idle.scored, idle.expired) == (0, 0, 0)
    assert [f.n for f in idle.figures] == [10]  # the figures are still reported
    assert {key: store.get(key) for key in store.list("monitor")} == written


def test_ledger_objects_read_again_after_a_crash_are_not_scored_twice(store: ObjectStore) -> None:
    """A crash after the steps were saved and before the read keys were: the next pass reads
    the same objects again and must drop what it already holds."""
    rng = np.random.default_rng(5)
    ObservationLog(store, SPEC).append("S1", SERIES.iloc[:100])
    ledger = ForecastLedger(store, "replica-a")
    for origin in range(80, 110):  # 19 scored at once, 11 waiting
        ledger.record(orjson.dumps(answer(origin, 1, rng)))
    ledger.flush()
    first = LiveMonitor(store, SPEC).run_once(NOW)
    assert (first.scored, first.pending) == (19, 11)
    store.put_atomic(STATE_KEY, json.dumps({"read_keys": [], "last_day": None}).encode())
    again = LiveMonitor(store, SPEC).run_once(NOW)
    assert again.read_objects == 1
    assert (again.scored, again.pending) == (0, 11)
    [figure] = again.figures
    assert figure.n == 19


def test_forecasts_whose_actual_never_comes_expire_a_late_window_after_serving(
    store: ObjectStore,
) -> None:
    ledger = ForecastLedger(store, "replica-a")
    for origin in range(10, 20):  # a station that reports nothing
        ledger.record(orjson.dumps(answer(origin, 2, np.random.default_rng(6))))
    ledger.flush()
    monitor = LiveMonitor(store, SPEC, late_window=timedelta(hours=1))
    served = datetime.now(UTC)
    assert monitor.run_once(served).pending == 20
    later = monitor.run_once(served + timedelta(hours=2))
    assert (later.expired, later.pending, later.figures) == (20, 0, [])


def test_ledger_rows_of_the_tensor_form_and_a_store_outage() -> None:
    """A tensor answer becomes one row per window and step with its bands; rows a failing
    store could not take are written by the next flush, the newest ``max_pending`` kept."""
    from flts.live.ledger import ledger_frame, read_ledger

    model = {"identifier": "S1", "run_id": "r", "model_type": "LSTM", "config_hash": "c"}
    forecast = [
        [[float(10 * i + s + t) for t in range(len(TARGETS))] for s in range(2)] for i in range(3)
    ]
    tensor = {
        "model": model,
        "targets": list(TARGETS),
        "times": [[f"2018-02-05T00:0{2 * (i + s + 1)}:00" for s in range(2)] for i in range(3)],
        "forecast": forecast,
        "intervals": {
            "80": {
                "lower": [[[v - 1 for v in step] for step in w] for w in forecast],
                "upper": [[[v + 1 for v in step] for step in w] for w in forecast],
            }
        },
    }
    frame = ledger_frame([(0, tensor)], TARGETS)
    assert len(frame) == 6
    assert frame["step"].tolist() == [1, 2, 1, 2, 1, 2]
    assert frame[TARGETS[0]].tolist() == [0.0, 1.0, 10.0, 11.0, 20.0, 21.0]
    assert frame[f"{TARGETS[0]}:upper:80"].tolist() == [1.0, 2.0, 11.0, 12.0, 21.0, 22.0]

    class Flaky(ObjectStore):
        down = True

        def put_atomic(self, key: str, data: bytes) -> None:
            if self.down:
                raise OSError("store down")
            super().put_atomic(key, data)

    store = Flaky(f"memory://{uuid.uuid4().hex}")
    ledger = ForecastLedger(store, "r", max_pending=1)
    for _ in range(2):
        ledger.record(orjson.dumps(tensor))
    assert ledger.flush() is None  # two answers, the newest kept
    assert ledger.dropped == 1
    store.down = False
    key = ledger.flush()
    assert key is not None
    assert len(read_ledger(store.get(key), TARGETS)) == 6


# ----------------------------------------------------------------------------- shards

STATIONS = [f"S{i}" for i in range(1, 9)]
HALVES = (Shard.parse("0/2"), Shard.parse("1/2"))
HOUR = Schedule(every=timedelta(hours=1))


def _store() -> ObjectStore:
    return ObjectStore(f"memory://{uuid.uuid4().hex}")


def _answers() -> dict[str, list[dict[str, Any]]]:
    """Two-step forecasts of every station, origins 80..109, each station its own noise."""
    return {
        name: [answer(o, 2, np.random.default_rng(i), identifier=name) for o in range(80, 110)]
        for i, name in enumerate(STATIONS)
    }


def _fleet(store: ObjectStore, answers: dict[str, list[dict[str, Any]]], rows: slice) -> None:
    """Observations ``rows`` of every station, and the answers (when given) in one object."""
    log = ObservationLog(store, SPEC)
    ledger = ForecastLedger(store, "replica-a")
    for name in STATIONS:
        log.append(name, SERIES.iloc[rows])
        for item in answers.get(name, []):
            ledger.record(orjson.dumps(item))
    ledger.flush()


def _by_identifier(figures: list[Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for figure in figures:
        row = figure if isinstance(figure, dict) else asdict(figure)
        out.setdefault(row["identifier"], []).append(row)
    return out


def _observation_reads(store: CountingStore) -> set[str]:
    """Identifiers whose observations ``store``'s callers listed or read."""
    return {
        key.split("/")[1]
        for _, key in store.reads()
        if key.startswith(f"{OBSERVATIONS_ROOT}/") and key.count("/") >= 1
    }


def _triggers(store: ObjectStore, shard: Shard, bus: MemoryBus) -> RetrainTriggers:
    keys = MonitorKeys.of(shard)
    return RetrainTriggers(
        store, bus, SPEC, drift=None, schedule=HOUR, state_key=keys.triggers_state
    )


def _promote(store: ObjectStore) -> None:
    promotions = PromotionStore(store)
    for name in STATIONS:
        promotions.record(
            Promotion(run_id="r1", model_type="RIDGE", config_hash="c0", identifier=name)
        )


def test_two_shards_score_what_one_monitor_scores_and_read_only_their_own() -> None:
    assert all(any(shard.owns(n) for n in STATIONS) for shard in HALVES)  # both have work
    answers = _answers()
    one, sharded = _store(), _store()
    for store in (one, sharded):
        _fleet(store, answers, slice(0, 100))
    whole = LiveMonitor(one, SPEC)
    counted = [CountingStore(sharded) for _ in HALVES]
    shards = [LiveMonitor(c, SPEC, shard=s) for c, s in zip(counted, HALVES, strict=True)]
    for store in (one, sharded):
        _fleet(store, {}, slice(100, 105))  # arrived after the monitors started
    for round_ in range(2):  # some steps wait in the first, all are scored in the second
        expected = whole.run_once(NOW)
        reports = [monitor.run_once(NOW) for monitor in shards]
        assert sum(r.scored for r in reports) == expected.scored > 0
        assert sum(r.pending for r in reports) == expected.pending
        assert (expected.pending > 0) == (round_ == 0)
        for counting, shard, report in zip(counted, HALVES, reports, strict=True):
            owned = {n for n in STATIONS if shard.owns(n)}
            assert _observation_reads(counting) == owned  # never another shard's
            assert set(_by_identifier(report.figures)) == owned
        together = _by_identifier([f for r in reports for f in r.figures])
        assert together == _by_identifier(expected.figures)
        for store in (one, sharded):
            _fleet(store, {}, slice(105, 130))

    merged, unsharded = read_figures(sharded), read_figures(one)
    assert merged is not None
    assert unsharded is not None
    assert merged["figures"] == unsharded["figures"]
    documents = [sharded.get_json(MonitorKeys.of(s).figures) for s in HALVES]
    assert merged["updated_at"] == min(d["updated_at"] for d in documents)
    assert sorted(merged["shards"]) == ["0/2", "1/2"]
    # Each shard's state is its own; the unsharded keys are left to an unsharded monitor.
    assert not sharded.exists(STATE_KEY)
    assert not sharded.exists(FIGURES_KEY)
    folders = {key.split("/")[2] for key in sharded.list(SHARDS_ROOT)}
    assert folders == {"0-of-2", "1-of-2"}
    assert one.exists(STATE_KEY)
    assert not list(one.list(SHARDS_ROOT))

    # A station's series (the dashboard) reads its own shard's steps only.
    counting = CountingStore(sharded)
    for name in STATIONS:
        steps = monitor_steps(counting, name)
        theirs = monitor_steps(one, name)
        assert len(steps) == len(theirs) > 0
        owner = next(MonitorKeys.of(s).root for s in HALVES if s.owns(name))
        parquet = {key for method, key in counting.reads() if method == "get"}
        assert {k for k in parquet if k.startswith(SHARDS_ROOT)} == {
            f"{owner}/scored.parquet",
            f"{owner}/pending.parquet",
        }


def test_a_shard_triggers_for_its_own_identifiers_only() -> None:
    store, bus = _store(), MemoryBus()
    _promote(store)
    _fleet(store, _answers(), slice(0, 130))
    monitors = [
        LiveMonitor(store, SPEC, shard=s, triggers=_triggers(store, s, bus)) for s in HALVES
    ]
    for monitor in monitors:
        assert monitor.run_once(NOW).retrains == []  # the schedule's clocks start
    fired = {}
    for shard, monitor in zip(HALVES, monitors, strict=True):
        events = monitor.run_once(NOW + timedelta(hours=2)).retrains
        fired[shard] = {e.identifier for e in events}
        assert fired[shard] == {n for n in STATIONS if shard.owns(n)}
        state = store.get_json(MonitorKeys.of(shard).triggers_state)
        assert set(state) == fired[shard]
    assert set().union(*fired.values()) == set(STATIONS)


def test_a_new_layout_goes_on_from_the_old_monitors_state() -> None:
    """One monitor become two shards: the shards keep its scored window and its read
    position, and their next scheduled triggers get new event ids, not the first ones."""
    store, bus = _store(), MemoryBus()
    _promote(store)
    _fleet(store, _answers(), slice(0, 130))
    whole = LiveMonitor(store, SPEC, triggers=_triggers(store, Shard(), bus))
    whole.run_once(NOW)
    first = {e.event_id for e in whole.run_once(NOW + timedelta(hours=2)).retrains}
    assert len(first) == len(STATIONS)
    before = _by_identifier(whole.figures())

    later = []
    for shard in HALVES:
        monitor = LiveMonitor(store, SPEC, shard=shard, triggers=_triggers(store, shard, bus))
        report = monitor.run_once(NOW + timedelta(hours=2, minutes=30))
        assert report.read_objects == 0  # the old monitor had read the ledger
        assert _by_identifier(report.figures) == {n: f for n, f in before.items() if shard.owns(n)}
        later += monitor.run_once(NOW + timedelta(hours=4)).retrains
    assert {e.identifier for e in later} == set(STATIONS)
    assert not first & {e.event_id for e in later}  # a repeated id would be dropped


@pytest.mark.parametrize("stale_first", [True, False])
def test_adopting_a_stale_watch_keeps_the_highest_schedule_count(stale_first: bool) -> None:
    """Two old states watch one station: a stale one ahead in drift alarms but behind in
    schedules, and a current one. Whichever is adopted first, the next scheduled trigger
    gets an event id neither used (a reused id would be dropped as a duplicate)."""
    store, bus = _store(), MemoryBus()
    _promote(store)
    seen = pd.DataFrame({"identifier": ["S1"]})
    current = RetrainTriggers(
        store, bus, SPEC, drift=None, schedule=HOUR, state_key="old/current.json"
    )
    assert current.observe(seen, NOW) == []  # the schedule's clock starts
    used = [e.event_id for e in current.observe(seen, NOW + timedelta(hours=2))]
    current.save()
    stale = store.get_json("old/current.json")
    stale["S1"]["alarms"] = 5  # drift fired there, then that monitor stopped
    store.put_json("old/stale.json", stale)
    for hours in (4, 6):
        used += [e.event_id for e in current.observe(seen, NOW + timedelta(hours=hours))]
    current.save()
    assert len(set(used)) == 3

    adopting = RetrainTriggers(
        store, bus, SPEC, drift=None, schedule=HOUR, state_key="new/triggers.json"
    )
    keys = ["old/stale.json", "old/current.json"]
    for key in keys if stale_first else keys[::-1]:
        adopting.adopt(key, lambda name: True)
    assert adopting.watches["S1"].alarms == 5  # the same champion: its drift count too
    [event] = adopting.observe(seen, NOW + timedelta(hours=8))
    assert event.event_id not in used


@pytest.mark.parametrize("stale_first", [True, False])
def test_adopting_prefers_the_watch_on_the_current_champion(stale_first: bool) -> None:
    """A stale state watches an older champion and is ahead in triggers (5 alarms, 1
    schedule); the current one watches the champion now promoted (2 alarms, 3 schedules).
    Its watch must win: a watch on the older champion would be reset on the next pass and
    publish the champion's drift ids from 0 again, which consumers drop as duplicates."""
    store, bus = _store(), MemoryBus()
    promotions = PromotionStore(store)
    for run in ("rX", "rY"):
        promotions.record(
            Promotion(run_id=run, model_type="RIDGE", config_hash="c0", identifier="S1")
        )
    # champion watched, drift alarms, schedules, hours since it last fed and scheduled
    states = {"old/stale.json": ("rX", 5, 1, 5.0), "old/current.json": ("rY", 2, 3, 0.5)}
    for key, (run, alarms, schedules, hours) in states.items():
        ago = (NOW - timedelta(hours=hours)).isoformat()
        counts = {"run_id": run, "alarms": alarms, "schedules": schedules}
        store.put_json(key, {"S1": {**counts, "fed_until": ago, "scheduled_at": ago}})

    adopting = RetrainTriggers(
        store, bus, SPEC, drift=None, schedule=HOUR, state_key="new/triggers.json"
    )
    keys = list(states) if stale_first else list(states)[::-1]
    taken = [adopting.adopt(key, lambda name: True) for key in keys]
    # Each count is what the call changed: the second one changes the watch only when the
    # current state comes second (a stale state adds nothing to the current watch).
    assert taken == ([1, 1] if stale_first else [1, 0])
    assert adopting.adopt(keys[-1], lambda name: True) == 0  # nothing new the second time
    watch = adopting.watches["S1"]
    assert (watch.run_id, watch.alarms, watch.schedules) == ("rY", 2, 3)
    assert watch.scheduled_at == store.get_json("old/current.json")["S1"]["scheduled_at"]
    seen = pd.DataFrame({"identifier": ["S1"]})
    assert adopting.observe(seen, NOW) == []  # the current schedule clock, not the stale one
    assert adopting.watches["S1"].alarms == 2  # the champion's drift count goes on


def test_read_figures_prefers_the_newest_document_of_each_identifier() -> None:
    """A layout changed and the old monitor's figures stayed: its identifiers a shard now
    reports come from the shard, the rest still from the old one, and the time is the
    oldest that still contributes."""
    store = _store()

    def figure(identifier: str, n: int) -> dict[str, Any]:
        return {"identifier": identifier, "run_id": "r", "model_type": "RIDGE", "step": 1, "n": n}

    old = {"updated_at": "2026-01-01T00:00:00+00:00", "figures": [figure("A", 1), figure("B", 1)]}
    store.put_json(FIGURES_KEY, old)
    assert read_figures(store) == old  # unsharded: as written
    new = {"updated_at": "2026-01-02T00:00:00+00:00", "figures": [figure("A", 2)], "shard": "A"}
    store.put_json(MonitorKeys.of(Shard.parse("A")).figures, new)
    merged = read_figures(store)
    assert merged is not None
    assert merged["figures"] == [figure("A", 2), figure("B", 1)]
    assert merged["updated_at"] == old["updated_at"]
    store.put_json(FIGURES_KEY, {**old, "figures": [figure("A", 1)]})  # all superseded
    merged = read_figures(store)
    assert merged is not None
    assert (merged["figures"], merged["updated_at"]) == ([figure("A", 2)], new["updated_at"])


def test_a_malformed_monitor_shard_is_refused_naming_the_setting() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"live\.monitor_shard '2/2'"):
        LiveSettings(monitor_shard="2/2")
    assert LiveSettings(monitor_shard="1/4").monitor_shard == "1/4"
    assert json.loads(LiveSettings().model_dump_json())["monitor_shard"] is None


def test_the_worker_of_a_shard_keeps_its_state_under_its_own_prefix(tmp_path: Path) -> None:
    """``FLTS_LIVE__MONITOR_SHARD`` reaches the worker: monitor and triggers state apart."""
    from flts.live.monitor_service import MonitorService
    from flts.services.context import ServiceContext

    context = ServiceContext(memory_settings(tmp_path, live=LiveSettings(monitor_shard="1/2")))
    _promote(context.store)
    _fleet(context.store, _answers(), slice(0, 130))
    service = MonitorService(context)
    service.tick()
    owned = {n for n in STATIONS if HALVES[1].owns(n)}
    assert {f.identifier for f in service.gauges.figures} == owned
    root = MonitorKeys.of(HALVES[1]).root
    assert root == f"{SHARDS_ROOT}/1-of-2"
    assert service.monitor.triggers is not None
    assert service.monitor.triggers.state_key == f"{root}/triggers-state.json"
    assert {key.rsplit("/", 1)[1] for key in context.store.list(root)} >= {
        "state.json",
        "pending.parquet",
        "scored.parquet",
        "live.json",
    }
    assert not context.store.exists(STATE_KEY)
    context.close()
