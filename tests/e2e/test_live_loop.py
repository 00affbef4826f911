"""Live operation of the embedded system: a station's test file replayed as observations, the
forecaster pushes a forecast for each new row, the monitor scores every one of them against
the rows that follow, and its figures equal a recomputation from the pushed forecasts."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flts.bus import open_bus
from flts.data.spec import FeatureSpec
from flts.data.synthetic import synthetic_traffic
from flts.evaluation import score
from flts.events import FORECASTS, Event, ForecastPublishedEvent
from flts.live.monitor import read_figures
from flts.live.replay import replay, replay_rows
from flts.live.triggers import read_triggers
from flts.settings import Settings
from flts.storage import ObjectStore
from servers.client import champion_run, healthy, upload_dataset, wait_http

pytestmark = pytest.mark.e2e
LIVE = {
    "FLTS_LIVE__MONITOR_INTERVAL_SECONDS": "1",
    "FLTS_LIVE__LEDGER_FLUSH_SECONDS": "0.5",
}


@pytest.mark.system_env(LIVE)
def test_replayed_rows_are_forecast_and_scored_against_what_followed(
    system: dict[str, Any], tmp_path: Path
) -> None:
    gateway, api, key = system["gateway"], system["api"], system["key"]
    identifier = "Live1"
    wait_http(lambda: healthy(gateway), 90, "the gateway")
    frame = synthetic_traffic(1_700, seed=4, start="2018-02-05 00:00:00")
    train = frame.iloc[:1_440].to_csv(index=False).encode()
    test = frame.iloc[1_440:].to_csv(index=False).encode()
    response = upload_dataset(gateway, train, test, identifier, timeout=60, key=key)
    assert response.status_code == 201, response.text
    run = wait_http(lambda: champion_run(api, identifier, key), 180, "the champion")

    csv = tmp_path / "live.csv"
    csv.write_bytes(test)
    spec = FeatureSpec()
    rows = replay_rows(csv, spec)[:200]
    settings = Settings(home=Path(system["logs"]).parent / "home")
    bus = open_bus(settings.bus.url)
    pushed: list[Event] = []
    probe = f"probe-{uuid.uuid4().hex[:8]}"

    def pushed_for(row: dict[str, Any]) -> bool:
        """The forecaster has pushed the forecast made from ``row`` (as the newest row)."""
        bus.consume(FORECASTS, probe, pushed.append, max_idle=0.2)
        after = pd.Timestamp(row["time"]) + spec.step
        return any(
            isinstance(e, ForecastPublishedEvent)
            and pd.Timestamp(str(e.payload.forecast[0]["time"])) == after
            for e in pushed
        )

    # 20 bursts of 10 rows, each waited for: the forecaster forecasts the newest rows of a
    # burst (and skips announcements made stale by the rows after them), however loaded
    # the machine is
    for start in range(0, 200, 10):
        done = replay(
            rows[start : start + 10],
            identifier=identifier,
            gateway=gateway,
            api_key=key,
            speed=2_400,
        )
        assert done.accepted == 10
        wait_http(partial(pushed_for, rows[start + 9]), 60, "the forecast of the newest row")

    def all_scored() -> dict[str, Any] | None:
        bus.consume(FORECASTS, probe, pushed.append, max_idle=0.2)
        figures = (read_figures(ObjectStore(settings.storage.url)) or {}).get("figures", [])
        mine = [f for f in figures if f["identifier"] == identifier and f["run_id"] == run]
        # every pushed forecast but the last (its actual is not replayed) scored
        expected = len(pushed) - 1
        return mine[0] if mine and mine[0]["n"] == expected else None

    found = wait_http(all_scored, 90, "the monitor scoring every pushed forecast")
    assert found is not None
    figure: dict[str, Any] = found
    bus.close()
    forecasts = [e for e in pushed if isinstance(e, ForecastPublishedEvent)]
    assert {e.payload.run_id for e in forecasts} == {run}
    actual = pd.DataFrame(rows).set_index("time")
    first_steps = [
        e.payload.forecast[0] for e in forecasts if e.payload.forecast[0]["time"] in actual.index
    ]
    assert len(first_steps) == figure["n"]
    targets = list(spec.targets)
    truth = actual.loc[[str(s["time"]) for s in first_steps], targets].to_numpy()
    predicted = np.array([[s[t] for t in targets] for s in first_steps])
    offline = score(truth[:, None], predicted[:, None], targets)
    assert figure["nrmse"] == pytest.approx(offline.nrmse, rel=1e-9)
    assert all(system["supervisor"].alive().values()), system["supervisor"].alive()


#: The detector may fire once 250 forecasts are scored (60 before the change): by then the
#: observations hold ~190 rows of the changed traffic, most of a retraining set of 300 rows
#: whose newest 20% (its test split) are all changed. With the defaults (alarm after 60,
#: 720 rows filled up from the upload) the set would be mostly the old regime.
DRIFT = {**LIVE, "FLTS_LIVE__DRIFT_MIN_SAMPLES": "250", "FLTS_LIVE__RETRAIN_MIN_ROWS": "300"}


@pytest.mark.system_env(DRIFT)
def test_a_regime_change_is_detected_retrained_once_and_the_new_champion_is_better(
    system: dict[str, Any], tmp_path: Path
) -> None:
    """Train on a station, replay its test file with its traffic x2.5 from row 60 on: the
    monitor's drift detector asks for one retraining, preprocessing builds it from the
    observations, the evaluator promotes a new champion, and its live error on the changed
    traffic is lower than the old champion's. The figures go to build/e2e/live_loop.json."""
    gateway, api, key = system["gateway"], system["api"], system["key"]
    identifier = "Drift1"
    wait_http(lambda: healthy(gateway), 90, "the gateway")
    frame = synthetic_traffic(2_100, seed=6, start="2018-02-05 00:00:00")
    train = frame.iloc[:1_440].to_csv(index=False).encode()
    test = frame.iloc[1_440:].to_csv(index=False).encode()
    assert upload_dataset(gateway, train, test, identifier, key=key).status_code == 201
    first = wait_http(lambda: champion_run(api, identifier, key), 180, "the first champion")

    csv = tmp_path / "live.csv"
    csv.write_bytes(test)
    spec = FeatureSpec()
    shift = 60
    rows = replay_rows(csv, spec, shift_after=shift, scale=2.5)
    settings = Settings(home=Path(system["logs"]).parent / "home")
    store = ObjectStore(settings.storage.url)
    replayed = 0

    def feed(count: int, speed: float = 2_400) -> None:
        nonlocal replayed
        replay(
            rows[replayed : replayed + count],
            identifier=identifier,
            gateway=gateway,
            api_key=key,
            speed=speed,
        )
        replayed += count

    feed(shift)
    triggers: list[dict[str, Any]] = []
    while replayed < 460 and not triggers:  # the changed traffic, until the detector fires
        feed(20)
        triggers = read_triggers(store, identifier)
    assert triggers, "no drift detected over 400 changed rows"
    requested = datetime.fromisoformat(triggers[0]["requested_at"])

    def retrained() -> str | None:
        run = champion_run(api, identifier, key)
        return run if run is not None and run != first else None

    second = wait_http(retrained, 240, "the retrained champion")
    swapped = datetime.now(UTC)
    feed(len(rows) - replayed, 1_200)  # the rest of the changed traffic, for the new champion

    def figures_of(run: str) -> dict[str, Any] | None:
        figures = (read_figures(store) or {}).get("figures", [])
        return next((f for f in figures if f["run_id"] == run and f["step"] == 1), None)

    def enough_scored() -> dict[str, Any] | None:
        figure = figures_of(str(second))
        return figure if figure is not None and figure["n"] >= 40 else None

    found = wait_http(enough_scored, 90, "live figures of the new champion")
    assert found is not None
    after: dict[str, Any] = found
    before = figures_of(str(first))
    assert before is not None
    assert after["nrmse"] < before["nrmse"]
    final = read_triggers(store, identifier)
    assert len(final) == 1, final  # exactly one retraining for one change
    assert final[0]["reason"] == "drift"
    assert final[0]["promoted"] is True
    detected_at = pd.Timestamp(str(final[0]["evidence"]["at"]))
    delay_rows = int((detected_at - pd.Timestamp(rows[shift]["time"])) / spec.step)
    report = {
        "detection_delay_rows": delay_rows,
        "retrain_to_swap_seconds": round((swapped - requested).total_seconds(), 1),
        "live_nrmse_before": before["nrmse"],
        "live_nrmse_after": after["nrmse"],
        "scored_before": before["n"],
        "scored_after": after["n"],
    }
    out = Path("build/e2e/live_loop.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    assert all(system["supervisor"].alive().values()), system["supervisor"].alive()
