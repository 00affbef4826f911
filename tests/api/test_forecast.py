"""POST /v1/forecast and /v1/forecast/batch: answers equal the model's offline predict, carry
the model's identity, and resolve identifiers explicitly."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from flts.data.spec import LTE_TARGETS

from .support import CONFIG_HASH, Harness, history_records, offline_forecast


def _ready(harness: Harness, run_id: str = "run-ridge", identifier: str = "global") -> None:
    harness.promote(run_id, identifier)
    harness.wait_serving(run_id, identifier)


def test_forecast_equals_offline_predict(harness: Harness) -> None:
    _ready(harness)
    records = history_records(40)
    response = harness.client.post("/v1/forecast", json={"history": records})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Run-Id"] == "run-ridge"
    assert response.headers["X-Config-Hash"] == CONFIG_HASH
    assert body["model"]["run_id"] == "run-ridge"
    assert body["model"]["model_type"] == "RIDGE"
    assert body["model"]["config_hash"] == CONFIG_HASH
    assert body["model"]["identifier"] == "global"
    assert body["model"]["promoted_at"].startswith("2026-01-01T00:00:00")

    [step] = body["forecast"]
    last = pd.Timestamp(records[-1]["time"])
    assert pd.Timestamp(step["time"]) == last + pd.Timedelta("2min")
    served = np.array([step[t] for t in LTE_TARGETS])
    expected = offline_forecast(harness.runs.dirs["run-ridge"], records)[0]
    assert np.all(np.abs(served - expected) <= 1e-6 * np.maximum(np.abs(expected), 1e-12))
    assert (served >= 0).all()


def test_forecast_uses_only_the_last_lags_rows(harness: Harness) -> None:
    _ready(harness, "run-persistence")
    records = history_records(25)
    response = harness.client.post("/v1/forecast", json={"history": records, "horizon": 1})
    assert response.status_code == 200, response.text
    [step] = response.json()["forecast"]
    # Persistence repeats the last row: the answer is the last record's targets.
    for target in LTE_TARGETS:
        assert step[target] == records[-1][target]


def test_explicit_identifier_has_no_fallback(harness: Harness) -> None:
    _ready(harness, "run-ridge", "global")
    _ready(harness, "run-persistence", "PobleSec")
    records = history_records(10)

    station = harness.client.post(
        "/v1/forecast", json={"identifier": "PobleSec", "history": records}
    )
    assert station.headers["X-Model-Run-Id"] == "run-persistence"
    assert station.json()["model"]["identifier"] == "PobleSec"

    default = harness.client.post("/v1/forecast", json={"history": records})
    assert default.headers["X-Model-Run-Id"] == "run-ridge"

    unknown = harness.client.post("/v1/forecast", json={"identifier": "ElBorn", "history": records})
    assert unknown.status_code == 503
    assert unknown.headers["Retry-After"] == "1"
    assert "'ElBorn'" in unknown.json()["detail"]


def test_omitted_identifier_uses_the_only_loaded_model(harness: Harness) -> None:
    _ready(harness, "run-persistence", "LesCorts")
    response = harness.client.post("/v1/forecast", json={"history": history_records(10)})
    assert response.status_code == 200
    assert response.json()["model"]["identifier"] == "LesCorts"

    _ready(harness, "run-ridge", "ElBorn")
    ambiguous = harness.client.post("/v1/forecast", json={"history": history_records(10)})
    assert ambiguous.status_code == 422
    assert "identifier is required" in ambiguous.json()["detail"]


def test_batch_matches_single_requests(harness: Harness) -> None:
    _ready(harness, "run-ridge", "global")
    _ready(harness, "run-persistence", "PobleSec")
    items = [
        {"history": history_records(12)},
        {"identifier": "PobleSec", "history": history_records(12, offset=50)},
    ]
    response = harness.client.post("/v1/forecast/batch", json={"requests": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["model"]["run_id"] for r in results] == ["run-ridge", "run-persistence"]
    for item, result in zip(items, results, strict=True):
        single = harness.client.post("/v1/forecast", json=item).json()
        assert result == single


def test_batch_fails_as_a_whole_naming_the_item(harness: Harness) -> None:
    _ready(harness)
    bad = history_records(12)
    bad[3]["down"] = None
    response = harness.client.post(
        "/v1/forecast/batch",
        json={"requests": [{"history": history_records(12)}, {"history": bad}]},
    )
    assert response.status_code == 422
    [problem] = response.json()["problems"]
    assert problem.startswith("requests[1]: column 'down' has missing values")
    assert "history[3]" in problem


def test_champion_endpoint_describes_the_served_model(harness: Harness) -> None:
    _ready(harness, "run-ridge", "PobleSec")
    response = harness.client.get("/v1/models/champion", params={"identifier": "PobleSec"})
    assert response.status_code == 200
    body = response.json()
    assert body["run_id"] == "run-ridge"
    assert body["model_type"] == "RIDGE"
    assert body["scores"] == {"nrmse": 0.8}
    assert body["feature_spec"]["lags"] == 10
    listing = harness.client.get("/v1/models").json()["models"]
    assert [m["run_id"] for m in listing] == ["run-ridge"]
    invalid = harness.client.get("/v1/models/champion", params={"identifier": "../etc"})
    assert invalid.status_code == 422


def test_openapi_documents_the_forecast_body(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory()
    schema = harness.client.get("/openapi.json").json()
    body = schema["paths"]["/v1/forecast"]["post"]["requestBody"]["content"]["application/json"]
    assert "history" in body["schema"]["properties"]
