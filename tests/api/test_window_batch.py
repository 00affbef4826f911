"""The tensor batch form of ``POST /v1/forecast/batch`` (flts.api.forms): the same forecasts
as the row form, every bad input refused with a precise 422, and its windows equal an
independent reading of the tensor."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from flts.api.forms import (
    ENCODED_DTYPES,
    MAX_BATCH_ITEMS,
    BatchCall,
    RejectedError,
    check_tensor,
    claimed_size,
    decode,
    tensor_call,
    tensor_windows,
)
from flts.api.schemas import WindowBatchRequest
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows
from flts.exceptions import DataValidationError, PayloadTooLargeError

from .support import Harness, history_records, request_windows

MAX_BATCH_REQUESTS = MAX_BATCH_ITEMS

SPEC = FeatureSpec()
BATCH = "/v1/forecast/batch"
#: ``max_history_rows`` of the test harness (tests/api/support.py).
MAX_ROWS = 200


def tensor(
    histories: list[list[dict[str, Any]]], columns: tuple[str, ...] = SPEC.inputs
) -> dict[str, Any]:
    """Row-form histories as one tensor body."""
    return {
        "columns": list(columns),
        "end_times": [history[-1]["time"] for history in histories],
        "windows": [[[row[c] for c in columns] for row in history] for history in histories],
    }


def histories(count: int, rows: int = 10) -> list[list[dict[str, Any]]]:
    return [history_records(rows, offset=3 * k) for k in range(count)]


def reference(document: Any) -> Any:
    """The documented body model's problems, or the windows an independent reading of a
    valid tensor gives (numpy for the values, pandas for the times)."""
    try:
        WindowBatchRequest.model_validate(document)
    except ValidationError as exc:
        return [str(e["msg"]) for e in exc.errors()]
    if "windows" in document:
        values = np.array(document["windows"], dtype=np.float64)
    else:
        encoded = document["encoded_windows"]
        raw = np.frombuffer(base64.b64decode(encoded["base64"]), ENCODED_DTYPES[encoded["dtype"]])
        values = raw.reshape(encoded["shape"]).astype(np.float64)
    order = [document["columns"].index(name) for name in SPEC.inputs]
    x = values[:, -SPEC.lags :, order]
    ends = pd.to_datetime(pd.Series(document["end_times"]), format="ISO8601", utc=True)
    last = ends.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")[:, None]
    step = np.timedelta64(int(SPEC.step.value), "ns")
    return Windows(
        x=x,
        y=None,
        input_times=last - step * np.arange(SPEC.lags - 1, -1, -1),
        target_times=last + step * np.arange(1, SPEC.horizon + 1),
    )


def encoded(document: dict[str, Any], dtype: str = "float64") -> dict[str, Any]:
    """A tensor body with its windows as base64 bytes instead of JSON numbers."""
    values = np.array(document.pop("windows"), dtype=ENCODED_DTYPES[dtype])
    data = base64.b64encode(values.tobytes()).decode()
    return {
        **document,
        "encoded_windows": {"dtype": dtype, "shape": [*values.shape], "base64": data},
    }


def fast(document: Any) -> Any:
    """What the forms make of a tensor body: ``(windows, horizon)``, or ``None`` if refused."""
    try:
        call = tensor_call(decode(BatchCall, orjson.dumps(document)))
        check_tensor(*claimed_size(call), MAX_ROWS)
        return tensor_windows(call, SPEC), call.horizon
    except (RejectedError, DataValidationError, PayloadTooLargeError):
        return None


@pytest.fixture
def ready(harness: Harness) -> Harness:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    return harness


@pytest.mark.parametrize("form", ["numbers", "float64 bytes"])
def test_tensor_answers_equal_row_answers(ready: Harness, form: str) -> None:
    items = histories(64)
    rows = ready.client.post(BATCH, json={"requests": [{"history": h} for h in items]})
    document = tensor(items) if form == "numbers" else encoded(tensor(items))
    answer = ready.client.post(BATCH, json=document)
    assert rows.status_code == answer.status_code == 200, answer.text
    body = answer.json()
    assert body["targets"] == list(SPEC.targets)
    assert len(body["times"]) == len(body["forecast"]) == 64
    # One model answers the whole tensor: its lineage headers come with it.
    assert answer.headers["X-Model-Run-Id"] == "run-ridge"
    for index, result in enumerate(rows.json()["results"]):
        assert result["model"] == body["model"]
        [record] = result["forecast"]
        assert body["times"][index] == [record["time"]]
        expected = [record[t] for t in SPEC.targets]
        assert body["forecast"][index] == [pytest.approx(expected, rel=1e-12)]


def test_columns_in_any_order_extra_columns_and_longer_windows(ready: Harness) -> None:
    items = histories(5, rows=14)
    plain = ready.client.post(BATCH, json=tensor([h[-10:] for h in items])).json()
    shuffled = (*reversed(SPEC.inputs), "station_note_length")
    for h in items:
        for row in h:
            row["station_note_length"] = 25.0
    answer = ready.client.post(BATCH, json=tensor(items, shuffled))
    assert answer.status_code == 200, answer.text
    assert answer.json() == plain


def test_offsets_in_end_times_are_converted_to_utc(ready: Harness) -> None:
    items = histories(2)
    document = tensor(items)
    naive = ready.client.post(BATCH, json=document).json()
    shifted = copy.deepcopy(document)
    shifted["end_times"] = [
        (np.datetime64(t) + np.timedelta64(1, "h")).astype(str) + "+01:00"
        for t in document["end_times"]
    ]
    got, _ = fast(shifted)  # offsets are converted to UTC
    np.testing.assert_array_equal(got.target_times, fast(document)[0].target_times)
    assert ready.client.post(BATCH, json=shifted).json() == naive


def test_float32_bytes_answer_like_float32_numbers(ready: Harness) -> None:
    document = tensor(histories(4))
    rounded = copy.deepcopy(document)
    rounded["windows"] = np.array(rounded["windows"], dtype=np.float32).tolist()
    as_bytes = ready.client.post(BATCH, json=encoded(document, "float32"))
    assert as_bytes.status_code == 200, as_bytes.text
    assert as_bytes.json() == ready.client.post(BATCH, json=rounded).json()


def test_windows_equal_the_reference_windows() -> None:
    documents = [
        tensor(histories(3)),
        tensor(histories(2, rows=12), SPEC.inputs[::-1]),
        encoded(tensor(histories(3))),
        encoded(tensor(histories(2, rows=11), SPEC.inputs[::-1]), "float32"),
    ]
    for document in documents:
        got, horizon = fast(document)
        want = reference(copy.deepcopy(document))
        assert horizon == 1
        np.testing.assert_array_equal(got.x, want.x)
        np.testing.assert_array_equal(got.input_times, want.input_times)
        np.testing.assert_array_equal(got.target_times, want.target_times)


def test_windows_equal_the_row_form_windows() -> None:
    items = histories(3)
    rows = request_windows([{"history": h} for h in items], SPEC)
    got, _ = fast(tensor(items))
    np.testing.assert_array_equal(got.x, rows.x)
    np.testing.assert_array_equal(got.input_times, rows.input_times)
    np.testing.assert_array_equal(got.target_times, rows.target_times)


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


#: name -> (change to a valid 3-window body, what the 422 says)
CASES: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "missing column": (
        lambda d: [d["columns"].pop(), *(row.pop() for w in d["windows"] for row in w)],
        "columns lacks the model's input(s) 'rb_up_var'",
    ),
    "duplicated column": (
        _set(("columns", 1), "down"),
        "columns names 'down' more than once",
    ),
    "end_times count": (
        lambda d: d["end_times"].pop(),
        "end_times has 2 entries for 3 windows",
    ),
    "short window": (
        lambda d: d["windows"][1].pop(0),
        "too few rows at windows[1] (the model needs at least the last 10 rows",
    ),
    "ragged row": (
        lambda d: d["windows"][2][4].pop(),
        "wrong number of values at windows[2][4]: every row has one per entry of columns (11)",
    ),
    "numeric string": (_set(("windows", 0, 3, 2), "1.5"), "windows[0][3][2]: Input should be"),
    "boolean": (_set(("windows", 0, 3, 2), True), "windows[0][3][2]: Input should be a valid"),
    "null": (_set(("windows", 2, 0, 0), None), "windows[2][0][0]: Input should be a valid"),
    "row not a list": (_set(("windows", 1, 1), 5.0), "windows[1][1]: Input should be a valid"),
    "unparsable end time": (
        _set(("end_times", 1), "yesterday"),
        "unparsable time at end_times[1]: 'yesterday' (expected ISO 8601",
    ),
    "impossible date": (
        _set(("end_times", 0), "2026-02-30 00:00:00"),
        "unparsable time at end_times[0]",
    ),
    "horizon zero": (_set(("horizon",), 0), "horizon: Input should be greater than"),
    "horizon too long": (
        _set(("horizon",), 2),
        "horizon 2 is out of range: this model forecasts 1 to 1 steps",
    ),
    "unknown key": (_set(("window_size",), 10), "window_size: Extra inputs are not permitted"),
    "both forms": (
        _set(("requests",), []),
        "a batch is either `requests` (row form) or `windows` (tensor form), not both",
    ),
    "no windows": (
        lambda d: [d["windows"].clear(), d["end_times"].clear()],
        "windows: List should have at least 1 item",
    ),
    "neither windows nor encoded_windows": (
        lambda d: d.pop("windows"),
        "give the windows as exactly one of windows and encoded_windows",
    ),
    "year 3000": (
        _set(("end_times", 2), "3000-06-01 00:00:00"),
        "unparsable time at end_times[2]: '3000-06-01 00:00:00'",
    ),
    "year 3000 with an offset": (
        _set(("end_times", 2), "3000-06-01 00:00:00+00:00"),
        "unparsable time at end_times[2]",
    ),
    "the clock": (_set(("end_times", 0), "now"), "unparsable time at end_times[0]: 'now'"),
    "two times in one entry": (
        _set(("end_times", 1), "2026-01-01 00:00:00\n2026-01-01 00:02:00"),
        "unparsable time at end_times[1]",
    ),
}


#: name -> (change to a valid 3-window body with encoded windows, what the 422 says)
ENCODED_CASES: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "not base64": (
        _set(("encoded_windows", "base64"), "not*base64"),
        "encoded_windows.base64 is not valid base64",
    ),
    "not ascii": (
        _set(("encoded_windows", "base64"), "ünïcode"),
        "encoded_windows.base64 is not valid base64",
    ),
    "bytes do not match the shape": (
        _set(("encoded_windows", "shape"), [3, 10, 10]),
        "encoded_windows.shape is [3, 10, 10]: it needs at least 1 window, at least 10 rows",
    ),
    "too few bytes": (
        _set(("encoded_windows", "shape"), [4, 10, 11]),
        "encoded_windows.base64 holds 2640 bytes; shape [4, 10, 11] of float64 needs 3520",
    ),
    "short windows": (
        _set(("encoded_windows", "shape"), [3, 5, 22]),
        "at least 10 rows per window (lags)",
    ),
    "unknown dtype": (
        _set(("encoded_windows", "dtype"), "int8"),
        "encoded_windows.dtype: Input should be 'float32' or 'float64'",
    ),
    "shape of two": (
        _set(("encoded_windows", "shape"), [3, 110]),
        "encoded_windows.shape: List should have at least 3 items",
    ),
    "both encodings": (
        _set(("windows",), [[[1.0] * 11] * 10] * 3),
        "give the windows as exactly one of windows and encoded_windows",
    ),
    "infinite": (
        lambda d: d["encoded_windows"].update(
            base64=base64.b64encode(np.full((3, 10, 11), np.inf).tobytes()).decode()
        ),
        "non-finite values at windows[0], windows[1], windows[2]",
    ),
    "end_times count": (
        lambda d: d["end_times"].append(d["end_times"][0]),
        "end_times has 4 entries for 3 windows",
    ),
}


@pytest.mark.parametrize(
    ("form", "name"),
    [("numbers", name) for name in sorted(CASES)]
    + [("bytes", name) for name in sorted(ENCODED_CASES)],
)
def test_bad_tensors_get_precise_422s(ready: Harness, form: str, name: str) -> None:
    if form == "numbers":
        change, message = CASES[name]
        document = tensor(histories(3))
    else:
        change, message = ENCODED_CASES[name]
        document = encoded(tensor(histories(3)))
    change(document)
    assert fast(copy.deepcopy(document)) is None, "the form must refuse it"
    response = ready.client.post(BATCH, json=document)
    assert response.status_code == 422, response.text
    assert any(message in problem for problem in response.json()["problems"]), response.json()


def test_only_the_first_bad_value_is_reported(ready: Harness) -> None:
    document = tensor(histories(3))
    document["windows"] = [[[None] * 11] * 10] * 3
    response = ready.client.post(BATCH, json=document)
    assert response.status_code == 422
    assert response.json()["problems"] == ["windows[0][0][0]: Input should be a valid number"]


def test_single_forecasts_outside_the_nanosecond_range_are_422(ready: Harness) -> None:
    rows = history_records(12)
    for row in rows:
        row["time"] = "3" + row["time"][1:]  # year 3026
    response = ready.client.post("/v1/forecast", json={"history": rows})
    assert response.status_code == 422
    assert "unparsable time at history[0]" in response.text


@pytest.mark.parametrize("form", ["numbers", "bytes"])
def test_windows_over_the_row_limit_are_413(ready: Harness, form: str) -> None:
    document = tensor(histories(2, rows=MAX_ROWS + 1))
    if form == "bytes":
        document = encoded(document)
    assert fast(copy.deepcopy(document)) is None
    response = ready.client.post(BATCH, json=document)
    assert response.status_code == 413
    assert f"a window has {MAX_ROWS + 1} rows, over the limit of {MAX_ROWS} rows" in response.text


def test_too_many_windows_is_413(ready: Harness) -> None:
    # Counted before anything else is checked, so tiny (invalid) windows show the limit.
    count = MAX_BATCH_REQUESTS + 1
    document = {"columns": ["down"], "end_times": ["x"] * count, "windows": [[[0]]] * count}
    response = ready.client.post(BATCH, json=document)
    assert response.status_code == 413
    assert f"{count} windows in one batch, over the limit of {MAX_BATCH_REQUESTS}" in response.text


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _references(value)]
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    return []


def test_openapi_documents_both_batch_forms(harness: Harness) -> None:
    schema = harness.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for reference in _references(schema):  # every reference resolves
        assert reference.removeprefix("#/components/schemas/") in components, reference
    body = schema["paths"][BATCH]["post"]["requestBody"]["content"]["application/json"]
    forms = [set(option["properties"]) for option in body["schema"]["oneOf"]]
    assert {"requests"} in forms
    assert {
        "identifier", "horizon", "intervals", "columns", "end_times", "windows", "encoded_windows"
    } in forms  # fmt: skip
    [tensor_form] = [o for o in body["schema"]["oneOf"] if "encoded_windows" in o["properties"]]
    encoded_options = tensor_form["properties"]["encoded_windows"]["anyOf"]
    assert any("base64" in option.get("properties", {}) for option in encoded_options)
