"""The standard serving protocols beside the native routes: the Open Inference Protocol v2
and MLflow's scoring protocol answer a window with the native route's numbers and lineage,
refuse bad requests with their reasons in the error bodies their clients read, describe the
champion's feature spec, and sit behind the same authentication."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd
import pytest

from flts.api import PromotionModelSource, create_app
from flts.api.service import Served
from flts.data.spec import FeatureSpec
from flts.promotion import PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext

from .support import CONFIG_HASH, Harness, LiveServer, history_records, make_settings

SPEC = FeatureSpec()
STATION = "PobleSec"


def _ready(harness: Harness, run_id: str = "run-ridge", identifier: str = STATION) -> None:
    harness.promote(run_id, identifier)
    harness.wait_serving(run_id, identifier)


def _native(harness: Harness, records: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    response = harness.client.post(
        "/v1/forecast", json={"identifier": STATION, "history": records, **extra}
    )
    assert response.status_code == 200, response.text
    return response


def _tensor(records: list[dict[str, Any]]) -> list[list[float]]:
    return [[row[name] for name in SPEC.inputs] for row in records]


def _infer_body(
    windows: list[list[list[float]]], end_times: list[str], *, single: bool = False, **extra: Any
) -> dict[str, Any]:
    rows, width = len(windows[0]), len(windows[0][0])
    shape = [rows, width] if single else [len(windows), rows, width]
    flat = [value for window in windows for row in window for value in row]
    return {
        "inputs": [
            {"name": "window", "shape": shape, "datatype": "FP64", "data": flat},
            {"name": "end_time", "shape": [len(end_times)], "datatype": "BYTES", "data": end_times},
        ],
        **extra,
    }


def _lineage(response: httpx.Response) -> tuple[str, str]:
    return response.headers["X-Model-Run-Id"], response.headers["X-Config-Hash"]


def _outputs(response: httpx.Response) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in response.json()["outputs"]}


# ----------------------------------------------------------------------------- same answers


def test_oip_infer_answers_the_native_forecast(harness: Harness) -> None:
    _ready(harness)
    records = history_records(10)
    native = _native(harness, records, intervals=[80])
    [step] = native.json()["forecast"]

    body = _infer_body([_tensor(records)], [records[-1]["time"]], single=True, id="req-1")
    body["parameters"] = {"intervals": [80]}
    response = harness.client.post(f"/v2/models/{STATION}/infer", json=body)
    assert response.status_code == 200, response.text
    assert _lineage(response) == _lineage(native) == ("run-ridge", CONFIG_HASH)
    document = response.json()
    assert document["model_name"] == STATION
    assert document["model_version"] == "run-ridge"
    assert document["id"] == "req-1"
    assert document["parameters"] == native.json()["model"]
    outputs = _outputs(response)
    forecast = outputs["forecast"]
    assert forecast["shape"] == [1, len(SPEC.targets)]
    assert forecast["parameters"]["targets"] == list(SPEC.targets)
    assert forecast["data"] == [step[target] for target in SPEC.targets]
    assert outputs["time"]["data"] == [step["time"]]
    [band] = native.json()["intervals"]["80"]
    assert outputs["forecast_lower_80"]["data"] == [band[t][0] for t in SPEC.targets]
    assert outputs["forecast_upper_80"]["data"] == [band[t][1] for t in SPEC.targets]


def test_oip_batch_nested_fp32_and_requested_outputs(harness: Harness) -> None:
    _ready(harness)
    histories = [history_records(10), history_records(12, offset=40)]
    natives = [_native(harness, h).json()["forecast"][0] for h in histories]
    windows = [_tensor(h[-10:]) for h in histories]
    body = _infer_body(windows, [h[-1]["time"] for h in histories])
    body["inputs"][0]["data"] = windows  # nested instead of flat
    body["inputs"][0]["datatype"] = "FP32"  # JSON numbers are read as they are
    body["outputs"] = [{"name": "forecast"}]
    response = harness.client.post(f"/v2/models/{STATION}/infer", json=body)
    assert response.status_code == 200, response.text
    [forecast] = response.json()["outputs"]
    assert forecast["name"] == "forecast"
    assert forecast["shape"] == [2, 1, len(SPEC.targets)]
    expected = [step[target] for step in natives for target in SPEC.targets]
    assert forecast["data"] == expected


def _mlflow_bodies(records: list[dict[str, Any]]) -> dict[str, tuple[str, bytes | dict[str, Any]]]:
    """The same history in every input format of MLflow's scoring protocol."""
    columns = list(records[0])
    params = {"identifier": STATION, "intervals": [80]}
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(records)
    return {
        "dataframe_split": (
            "json",
            {
                "dataframe_split": {
                    "columns": columns,
                    "data": [[r[c] for c in columns] for r in records],
                    "index": list(range(len(records))),
                },
                "params": params,
            },
        ),
        "dataframe_records": ("json", {"dataframe_records": records, "params": params}),
        "instances": ("json", {"instances": records, "params": params}),
        "inputs (columns)": (
            "json",
            {"inputs": {c: [r[c] for r in records] for c in columns}, "params": params},
        ),
        "inputs (records)": ("json", {"inputs": records, "params": params}),
        "csv": ("csv", out.getvalue().encode()),
    }


def test_invocations_answer_the_native_forecast_in_every_format(harness: Harness) -> None:
    _ready(harness)
    records = history_records(10)
    native = _native(harness, records, intervals=[80]).json()
    plain = _native(harness, records).json()
    for form, (kind, body) in _mlflow_bodies(records).items():
        if kind == "json":
            response = harness.client.post("/invocations", json=body)
        else:  # CSV carries no params: the only model loaded answers, without intervals
            assert isinstance(body, bytes)
            response = harness.client.post(
                "/invocations", content=body, headers={"Content-Type": "text/csv"}
            )
        assert response.status_code == 200, (form, response.text)
        assert _lineage(response) == ("run-ridge", CONFIG_HASH), form
        [prediction] = response.json()["predictions"]
        [step] = (native if kind == "json" else plain)["forecast"]
        for key, value in step.items():
            assert prediction[key] == value, (form, key)
        if kind == "json":
            [band] = native["intervals"]["80"]
            for target in SPEC.targets:
                assert prediction[f"{target}_lower_80"] == band[target][0], form
                assert prediction[f"{target}_upper_80"] == band[target][1], form
        else:
            assert set(prediction) == set(step), form


@pytest.mark.filterwarnings("ignore:.*type hint.*:UserWarning")  # MLflow's own, on import
def test_mlflow_scoring_client_gets_the_native_answer(harness: Harness) -> None:
    """MLflow's own scoring-server client, unchanged, against this server."""
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    _ready(harness)
    records = history_records(10)
    [step] = _native(harness, records).json()["forecast"]
    url = httpx.URL(str(harness.client.base_url))
    client = ScoringServerClient(url.host, url.port)  # type: ignore[no-untyped-call]
    client.wait_server_ready(timeout=10)  # type: ignore[no-untyped-call]
    frame = pd.DataFrame(records)
    answer = client.invoke(frame, params={"identifier": STATION}).get_predictions()
    assert answer.to_dict(orient="records") == [step]


# ----------------------------------------------------------------------------- refusals


def test_oip_refusals_carry_their_reasons(harness: Harness) -> None:
    _ready(harness)
    records = history_records(10)
    window, end = _tensor(records), [records[-1]["time"]]
    url = f"/v2/models/{STATION}/infer"

    def refused(body: Any, status: int, *words: str) -> None:
        response = harness.client.post(url, json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        document = response.json()
        assert document["error"] == document["detail"]
        for word in words:
            assert word in document["error"], (word, document)

    bad_type = _infer_body([window], end, single=True)
    bad_type["inputs"][0]["datatype"] = "INT64"
    refused(bad_type, 400, "INT64", "FP64")
    refused({"inputs": _infer_body([window], end)["inputs"][:1]}, 400, "end_time")
    short = _infer_body([window], end, single=True)
    short["inputs"][0]["shape"] = [10, 12]
    refused(short, 400, "110 values", "120")
    refused({"inputs": [], "unknown": 1}, 400, "unknown")
    refused(_infer_body([window], end, parameters={"speed": 1}), 400, "speed")
    refused(_infer_body([window], end, outputs=[{"name": "forecast_lower_80"}]), 400, "intervals")
    # Well-formed v2 requests whose data the native validation refuses: 422, every reason.
    few = _infer_body([window[:5]], end)
    refused(few, 422, "too few rows at windows[0]", "lags")
    refused(_infer_body([window], ["yesterday"]), 422, "end_times[0]")
    refused(_infer_body([window], end, parameters={"horizon": 3}), 422, "horizon 3")
    # JSON numbers have no size limit; one past 64 bits is bad input, never a server error
    refused(_infer_body([window], end, parameters={"horizon": 2**64 + 1}), 422, "parameters")
    binary = _infer_body([window], end)
    binary["inputs"][0]["parameters"] = {"binary_data_size": 880}
    refused(binary, 400, "binary")


def test_oip_unknown_model_is_404_and_a_loading_one_503(harness: Harness) -> None:
    _ready(harness)
    records = history_records(10)
    body = _infer_body([_tensor(records)], [records[-1]["time"]])
    unknown = harness.client.post("/v2/models/ElBorn/infer", json=body)
    assert unknown.status_code == 404
    assert "'ElBorn'" in unknown.json()["error"]
    assert harness.client.get("/v2/models/ElBorn").status_code == 404
    assert harness.client.get("/v2/models/ElBorn/ready").status_code == 404
    # A champion that cannot be loaded, with nothing to fall back on: promoted, not ready.
    harness.promote("broken", "LesCorts")
    harness.wait_for(lambda: "broken" in harness.runs.loads)
    for response in (
        harness.client.post("/v2/models/LesCorts/infer", json=body),
        harness.client.get("/v2/models/LesCorts/ready"),
    ):
        assert response.status_code == 503, response.text
        assert int(response.headers["Retry-After"]) >= 1
        assert "LesCorts" in response.json()["error"]


def test_invocations_refusals_carry_their_reasons(harness: Harness) -> None:
    _ready(harness)
    records = history_records(10)

    def refused(status: int, code: str, *words: str, **request: Any) -> None:
        response = harness.client.post("/invocations", **request)
        assert response.status_code == status, response.text
        document = response.json()
        assert document["error_code"] == code
        assert document["message"] == document["detail"]
        for word in words:
            assert word in document["message"], (word, document)

    refused(400, "BAD_REQUEST", "exactly one", json={"instances": records, "inputs": records})
    refused(400, "BAD_REQUEST", "exactly one", json={"params": {}})
    refused(400, "BAD_REQUEST", "speed", json={"instances": records, "params": {"speed": 2}})
    ragged = {"columns": ["time", "down"], "data": [["2026-01-01 00:00:00"]]}
    refused(400, "BAD_REQUEST", "one value per column", json={"dataframe_split": ragged})
    refused(415, "BAD_REQUEST", "text/plain", content=b"x", headers={"Content-Type": "text/plain"})
    missing = [dict(row) for row in records]
    missing[3]["down"] = None
    refused(422, "BAD_REQUEST", "'down'", "history[3]", json={"dataframe_records": missing})
    refused(422, "BAD_REQUEST", "lags", json={"dataframe_records": records[:4]})
    huge = {"dataframe_records": records, "params": {"horizon": 2**64 + 1}}
    refused(422, "BAD_REQUEST", "params", json=huge)
    unknown = {"dataframe_records": records, "params": {"identifier": "ElBorn"}}
    refused(404, "RESOURCE_DOES_NOT_EXIST", "'ElBorn'", json=unknown)


# ----------------------------------------------------------------------------- probes, metadata


def test_probes_follow_readiness(harness: Harness) -> None:
    assert harness.client.get("/v2/health/live").json() == {"live": True}
    for path in ("/v2/health/ready", "/ping"):
        response = harness.client.get(path)
        assert response.status_code == 503, path
        assert int(response.headers["Retry-After"]) >= 1
    records = history_records(10)
    waiting = harness.client.post("/invocations", json={"dataframe_records": records})
    assert waiting.status_code == 503
    assert waiting.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    _ready(harness)
    assert harness.client.get("/v2/health/ready").json() == {"ready": True}
    assert harness.client.get("/ping").json() == {"status": "ready"}
    ready = harness.client.get(f"/v2/models/{STATION}/ready")
    assert ready.json() == {"name": STATION, "ready": True}


def test_metadata_is_the_champions_feature_spec(harness: Harness) -> None:
    _ready(harness)
    response = harness.client.get(f"/v2/models/{STATION}")
    assert response.status_code == 200, response.text
    document = response.json()
    spec = harness.app.holder.snapshot()[STATION].spec
    assert document["name"] == STATION
    assert document["versions"] == ["run-ridge"]
    inputs = {tensor["name"]: tensor for tensor in document["inputs"]}
    assert inputs["window"]["shape"] == [-1, spec.lags, len(spec.inputs)]
    assert inputs["end_time"]["datatype"] == "BYTES"
    outputs = {tensor["name"]: tensor for tensor in document["outputs"]}
    assert outputs["forecast"]["shape"] == [-1, spec.horizon, len(spec.targets)]
    parameters = document["parameters"]
    assert parameters["columns"] == list(spec.inputs)
    assert parameters["targets"] == list(spec.targets)
    assert parameters["feature_spec"] == spec.model_dump(mode="json")
    assert harness.client.get("/v2").json()["name"] == "flts"


def test_openapi_documents_the_protocol_routes(harness: Harness) -> None:
    paths = harness.client.get("/openapi.json").json()["paths"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert {"400", "404", "422", "503"} <= set(infer["responses"])
    assert "application/problem+json" in infer["responses"]["422"]["content"]
    assert "application/json" in infer["requestBody"]["content"]
    invocations = paths["/invocations"]["post"]
    assert {"application/json", "text/csv"} <= set(invocations["requestBody"]["content"])
    assert "415" in invocations["responses"]
    assert "503" in paths["/ping"]["get"]["responses"]


# ----------------------------------------------------------------------------- auth


@pytest.fixture
def keyed(tmp_path: Path, harness: Harness) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A second replica of the same promotions behind API keys."""
    keys = tmp_path / "keys.json"
    scoped = {
        "forecast": create_key(keys, "reader", ["forecast"]),
        "upload": create_key(keys, "uploader", ["upload"]),
    }
    settings = make_settings(tmp_path).model_copy(update={"security": _security(keys)})
    context = ServiceContext(settings)
    promotions = PromotionStore(harness.context.store, run_exists=harness.runs.exists)
    source = PromotionModelSource(promotions, harness.runs.load)
    app = create_app(context, replica_id="keyed", follow_bus=False, source=source)
    with LiveServer(app) as client:
        yield client, scoped
    context.close()


def _security(keys: Path) -> Any:
    from flts.settings import SecuritySettings

    return SecuritySettings(keys_file=keys)


def test_protocol_routes_need_a_forecast_key_and_probes_are_open(
    harness: Harness, keyed: tuple[httpx.Client, dict[str, str]]
) -> None:
    _ready(harness)
    client, keys = keyed
    records = history_records(10)
    infer = ("POST", f"/v2/models/{STATION}/infer")
    calls: dict[tuple[str, str], Any] = {
        infer: _infer_body([_tensor(records)], [records[-1]["time"]]),
        ("POST", "/invocations"): {"dataframe_records": records},
        ("GET", f"/v2/models/{STATION}"): None,
        ("GET", f"/v2/models/{STATION}/ready"): None,
        ("GET", "/v2"): None,
    }
    for (method, path), body in calls.items():
        anonymous = client.request(method, path, json=body)
        assert anonymous.status_code == 401, path
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        field = "error_code" if path == "/invocations" else "error"
        assert "API key" in str(anonymous.json()["detail"]), path
        assert field in anonymous.json(), path
        wrong = client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {keys['upload']}"}
        )
        assert wrong.status_code == 403, path
        harness.wait_for(lambda: client.get("/v2/health/ready").status_code == 200)
        allowed = client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {keys['forecast']}"}
        )
        assert allowed.status_code == 200, (path, allowed.text)
    for probe in ("/v2/health/live", "/v2/health/ready", "/ping"):
        assert client.get(probe).status_code == 200, probe


def test_one_window_calls_arriving_together_share_one_model_call(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a v2 client sends per forecast (one window) is micro-batched like the native
    single forecasts, with each request's own numbers."""
    _ready(harness)
    service = harness.app.service
    model = service.holder.snapshot()[STATION].model
    predict = model.predict
    calls: list[int] = []

    def counted(windows: Any) -> Any:
        calls.append(len(windows))
        return predict(windows)

    monkeypatch.setattr(model, "predict", counted)
    histories = [history_records(10, offset=10 * i) for i in range(8)]
    bodies = [
        orjson.dumps(
            {
                "identifier": STATION,
                "columns": list(SPEC.inputs),
                "end_times": [h[-1]["time"]],
                "windows": [_tensor(h)],
            }
        )
        for h in histories
    ]

    async def together() -> list[bytes]:
        return await asyncio.gather(*(service.forecast_batch(b, Served()) for b in bodies))

    answers = [orjson.loads(a) for a in asyncio.run(together())]
    assert calls == [8]
    for history, answer in zip(histories, answers, strict=True):
        [step] = _native(harness, history).json()["forecast"]
        assert answer["forecast"] == [[[step[t] for t in SPEC.targets]]]
        assert answer["times"] == [[step["time"]]]
