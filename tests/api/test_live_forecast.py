"""POST /v1/forecast with only an identifier: the newest stored observations of that station
(written by the gateway's observation log to the same object store) are the history, with the
same answer as sending those rows; rows that cannot make a window are a 422 naming why."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from flts.api import PromotionModelSource
from flts.data.reader import validate_rows
from flts.data.spec import LTE_TARGETS
from flts.evaluation import score
from flts.events import FORECASTS, Event, ForecastPublishedEvent
from flts.live.forecaster import ForecasterService
from flts.live.ingest import ObservationIngest
from flts.live.monitor import LiveMonitor
from flts.live.observations import ObservationLog

from .support import Harness, history_records


def _store(harness: Harness, records: list[dict[str, Any]], identifier: str = "PobleSec") -> None:
    log = ObservationLog(harness.context.store, harness.context.settings.feature_spec)
    log.append(identifier, validate_rows(pd.DataFrame(records), log.spec))


def test_a_forecast_from_stored_rows_equals_one_with_those_rows_as_history(
    harness: Harness,
) -> None:
    harness.promote("run-ridge", "PobleSec")
    harness.wait_serving("run-ridge", "PobleSec")
    records = history_records(30)
    _store(harness, records[:20])
    _store(harness, records[20:])  # a second append: the replica reads both parts
    stored = harness.client.post("/v1/forecast", json={"identifier": "PobleSec", "horizon": 1})
    assert stored.status_code == 200, stored.text
    sent = harness.client.post("/v1/forecast", json={"identifier": "PobleSec", "history": records})
    assert stored.json()["forecast"] == sent.json()["forecast"]
    assert stored.json()["forecast"][0]["time"].startswith(
        str(pd.Timestamp(records[-1]["time"]) + pd.Timedelta("2min")).replace(" ", "T")
    )
    _store(harness, history_records(1, offset=30))  # a new row moves the forecast on
    moved = harness.client.post("/v1/forecast", json={"identifier": "PobleSec"})
    assert moved.json()["forecast"][0]["time"] > stored.json()["forecast"][0]["time"]


def test_stored_rows_that_cannot_make_a_window_are_a_422_naming_why(harness: Harness) -> None:
    harness.promote("run-ridge", "PobleSec")
    harness.wait_serving("run-ridge", "PobleSec")

    def post(body: dict[str, Any]) -> httpx.Response:
        return harness.client.post("/v1/forecast", json=body)

    none = post({"identifier": "PobleSec"})
    assert none.status_code == 422
    assert "0 rows, a forecast needs the newest 10 (lags)" in none.json()["detail"]
    records = history_records(30)
    _store(harness, records[:5] + records[8:15])  # three rows missing within the newest 10
    gap = post({"identifier": "PobleSec"})
    assert gap.status_code == 422
    assert f"rows missing between {records[4]['time']}" in gap.json()["detail"]
    holes = history_records(12, offset=100)
    holes[-1]["down"] = None
    _store(harness, holes)
    missing = post({"identifier": "PobleSec"})
    assert missing.status_code == 422
    assert f"missing values at {holes[-1]['time']}" in missing.json()["detail"]
    assert post({}).status_code == 422  # no identifier, no history
    assert post({"identifier": "ElBorn"}).status_code == 503  # no model for it
    batch = harness.client.post(
        "/v1/forecast/batch", json={"requests": [{"identifier": "PobleSec"}]}
    )
    assert batch.status_code == 422
    assert "requests[0].history: required in a batch" in batch.json()["detail"]


def test_every_served_forecast_is_scored_by_the_monitor_once_its_actual_arrives(
    harness: Harness,
) -> None:
    """Through the real replica: single and batch forecasts land in the ledger, the monitor
    joins them with the stored actuals and its NRMSE equals one computed from the answers."""
    harness.promote("run-ridge", "PobleSec")
    harness.wait_serving("run-ridge", "PobleSec")
    records = history_records(60)
    served = []
    for end in range(10, 40):
        body = {"identifier": "PobleSec", "history": records[end - 10 : end], "horizon": 1}
        response = harness.client.post("/v1/forecast", json=body)
        assert response.status_code == 200
        served.append(response.json()["forecast"][0])
    batch = {
        "requests": [
            {"identifier": "PobleSec", "history": records[end - 10 : end]} for end in (45, 50)
        ]
    }
    answered = harness.client.post("/v1/forecast/batch", json=batch)
    assert answered.status_code == 200
    served += [result["forecast"][0] for result in answered.json()["results"]]
    ledger = harness.app.service.ledger
    assert ledger is not None
    assert ledger.flush() is not None
    _store(harness, records)
    spec = harness.context.settings.feature_spec
    monitor = LiveMonitor(harness.context.store, spec)
    report = monitor.run_once()
    assert (report.new_steps, report.scored, report.pending) == (32, 32, 0)
    [figure] = report.figures
    assert (figure.identifier, figure.run_id, figure.step, figure.n) == (
        "PobleSec",
        "run-ridge",
        1,
        32,
    )
    by_time = {pd.Timestamp(r["time"]): r for r in records}
    truth = np.array([[by_time[pd.Timestamp(s["time"])][t] for t in LTE_TARGETS] for s in served])
    pred = np.array([[s[t] for t in LTE_TARGETS] for s in served])
    assert figure.nrmse == pytest.approx(score(truth[:, None], pred[:, None], LTE_TARGETS).nrmse)
    restarted = LiveMonitor(harness.context.store, spec)
    assert restarted.run_once().read_objects == 0  # its state survives: nothing read twice
    assert restarted.figures() == report.figures


def test_the_forecaster_pushes_a_forecast_for_each_new_row_and_records_it(
    harness: Harness,
) -> None:
    harness.promote("run-ridge", "PobleSec")
    harness.wait_serving("run-ridge", "PobleSec")
    context = harness.context
    ingest = ObservationIngest(context)
    records = history_records(14)
    ingest.ingest_records("PobleSec", records[:5])  # too few rows for a window: skipped
    ingest.ingest_records("PobleSec", records[5:12])
    ingest.ingest_records("PobleSec", records[12:])
    forecaster = ForecasterService(
        context, "forecaster-test", PromotionModelSource(harness.promotions, harness.runs.load)
    )
    stats = context.bus.consume(
        forecaster.topics, forecaster.group, forecaster.handle, max_idle=0.5
    )
    assert stats.handled == 3
    # the first announcement has too few rows, the second is stale by the time it is read
    # (the third's rows are stored): one forecast, from the newest rows
    assert forecaster.published == 1
    pushed: list[Event] = []
    context.bus.consume(FORECASTS, "probe", pushed.append, max_idle=0.2)
    assert all(isinstance(e, ForecastPublishedEvent) for e in pushed)
    last = pushed[-1]
    assert isinstance(last, ForecastPublishedEvent)
    asked = harness.client.post("/v1/forecast", json={"identifier": "PobleSec"}).json()
    assert last.payload.forecast == asked["forecast"]
    assert (last.payload.run_id, last.identifier) == ("run-ridge", "PobleSec")
    forecaster.close()  # writes its ledger: the monitor scores pushed forecasts too
    monitor = LiveMonitor(context.store, context.settings.feature_spec)
    assert monitor.run_once().new_steps == 1
