"""POST /v1/forecast with only an identifier: the newest stored observations of that station
(written by the gateway's observation log to the same object store) are the history, with the
same answer as sending those rows; rows that cannot make a window are a 422 naming why."""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd

from flts.data.reader import validate_rows
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
