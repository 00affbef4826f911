"""The forecast ledger and the live monitor on an in-memory store: recorded answers become
ledger rows, the monitor scores each step once its actual (and persistence's) is stored, with
the evaluator's own figures, keeps waiting for the rest, expires what can never arrive, and a
restarted monitor goes on where the last one stopped."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest

from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.evaluation import score
from flts.live.ledger import ForecastLedger
from flts.live.monitor import STATE_KEY, LiveMonitor, read_figures
from flts.live.observations import ObservationLog
from flts.storage import ObjectStore

SPEC = FeatureSpec()
TARGETS = SPEC.targets
SERIES = validate_rows(synthetic_traffic(600, seed=11), SPEC)
# The ledger files its objects under the wall-clock day they are written, so the passes run
# "now" too (the monitor lists the days up to the pass time).
NOW = datetime.now(UTC)


def answer(origin: int, horizon: int, rng: np.random.Generator, run: str = "r1") -> dict[str, Any]:
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
    model = {"identifier": "S1", "run_id": run, "model_type": "RIDGE", "config_hash": "c0ffee00"}
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
