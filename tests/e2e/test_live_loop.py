"""Live operation of the embedded system: a station's test file replayed as observations, the
forecaster pushes a forecast for each new row, the monitor scores every one of them against
the rows that follow, and its figures equal a recomputation from the pushed forecasts."""

from __future__ import annotations

import json
import uuid
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
from flts.settings import Settings
from flts.storage import ObjectStore
from servers.client import champion_run, healthy, upload_dataset, wait_http
from servers.live_loop import DRIFT_SETTINGS, LIVE_SETTINGS, run_regime_change

pytestmark = pytest.mark.e2e


@pytest.mark.system_env(LIVE_SETTINGS)
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
        # every pushed forecast whose target was replayed is scored (not the last row's,
        # nor a second push of it when a loaded machine redelivered its announcement)
        replayed = {str(r["time"]) for r in rows}
        expected = sum(
            isinstance(e, ForecastPublishedEvent) and e.payload.forecast[0]["time"] in replayed
            for e in pushed
        )
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


@pytest.mark.system_env(DRIFT_SETTINGS)
def test_a_regime_change_is_detected_retrained_once_and_the_new_champion_is_better(
    system: dict[str, Any], tmp_path: Path
) -> None:
    """Train on a station, replay its test file with its traffic x2.5 from row 60 on: the
    monitor's drift detector asks for one retraining, preprocessing builds it from the
    observations, the evaluator promotes a new champion, and its live error on the changed
    traffic is lower than the old champion's. The figures go to build/e2e/live_loop.json."""
    gateway, api, key = system["gateway"], system["api"], system["key"]
    wait_http(lambda: healthy(gateway), 90, "the gateway")
    settings = Settings(home=Path(system["logs"]).parent / "home")
    seen = run_regime_change(
        gateway=gateway,
        bus_url=settings.bus.url,
        api=api,
        key=key,
        store=ObjectStore(settings.storage.url),
        identifier="Drift1",
        workdir=tmp_path,
    )
    assert seen.after["nrmse"] < seen.before["nrmse"]
    assert len(seen.triggers) == 1, seen.triggers  # exactly one retraining for one change
    assert seen.triggers[0]["reason"] == "drift"
    assert seen.triggers[0]["promoted"] is True
    out = Path("build/e2e/live_loop.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(seen.report, indent=2) + "\n")
    assert all(system["supervisor"].alive().values()), system["supervisor"].alive()
