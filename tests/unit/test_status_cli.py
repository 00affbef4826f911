"""``flts status -o json``: the champion's evaluation figure next to the live figures the
monitor computed from served forecasts and the actuals that followed them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
from typer.testing import CliRunner

from flts.cli import app
from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.live.ledger import ForecastLedger
from flts.live.monitor import LiveMonitor
from flts.live.observations import ObservationLog
from flts.promotion import Promotion
from flts.services.context import ServiceContext
from flts.settings import Settings


def test_status_shows_the_live_figures_of_the_champion(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    context = ServiceContext(Settings())
    client = context.tracker.client
    run_id = client.create_run(client.create_experiment("status-test")).info.run_id
    context.promotions.record(
        Promotion(run_id=run_id, model_type="RIDGE", config_hash="abcdef012345", identifier="S1")
    )
    spec = FeatureSpec()
    series = validate_rows(synthetic_traffic(80, seed=2), spec)
    ObservationLog(context.store, spec).append("S1", series)
    ledger = ForecastLedger(context.store, "r")
    model = {"identifier": "S1", "run_id": run_id, "model_type": "RIDGE", "config_hash": "abc"}
    for origin in range(20, 40):
        when = series.index[origin + 1]
        values = series.loc[when, list(spec.targets)].to_numpy() * 1.1
        record = {"time": when.isoformat(), **dict(zip(spec.targets, values.tolist(), strict=True))}
        ledger.record(orjson.dumps({"forecast": [record], "model": model}))
    ledger.flush()
    [figure] = LiveMonitor(context.store, spec).run_once().figures
    context.close()

    result = CliRunner().invoke(app, ["status", "-o", "json"])
    assert result.exit_code == 0, result.output
    [champion] = json.loads(result.stdout)["champions"]
    assert champion["champion"]["run_id"] == run_id
    [live] = champion["live"]
    assert live["n"] == 20
    assert np.isclose(live["nrmse"], figure.nrmse)
    tables = CliRunner().invoke(app, ["status"])
    assert tables.exit_code == 0, tables.output
    assert "live NRMSE" in tables.output
    assert f"{figure.nrmse:.4f}" in tables.output


def test_flts_retrain_publishes_a_manual_request_that_status_shows(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.events import RETRAIN_REQUESTED, Event, RetrainRequestedEvent

    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    unknown = CliRunner().invoke(app, ["retrain", "--identifier", "S1"])
    assert unknown.exit_code == 1
    assert "no model has been promoted" in unknown.output
    context = ServiceContext(Settings())
    context.promotions.store.put_json(
        context.promotions.pointer_key("S1"),
        Promotion(
            run_id="run-1", model_type="RIDGE", config_hash="abcdef012345", identifier="S1"
        ).model_dump(mode="json"),
    )
    result = CliRunner().invoke(app, ["retrain", "--identifier", "S1", "--reason", "new antenna"])
    assert result.exit_code == 0, result.output
    events: list[Event] = []
    context.bus.consume(RETRAIN_REQUESTED, "probe", events.append, max_idle=0.2)
    [event] = events
    assert isinstance(event, RetrainRequestedEvent)
    assert (event.identifier, event.payload.reason.value) == ("S1", "manual")
    assert (event.payload.note, event.payload.champion_run_id) == ("new antenna", "run-1")
    context.close()

    status = CliRunner().invoke(app, ["status", "-o", "json"])
    assert status.exit_code == 0, status.output
    [entry] = json.loads(status.stdout)["retraining"]
    assert (entry["event_id"], entry["outcome"]) == (event.event_id, None)
    tables = CliRunner().invoke(app, ["status"])
    assert "Retraining" in tables.output
    assert "new antenna" in tables.output
    assert "waiting for preprocess" in tables.output
