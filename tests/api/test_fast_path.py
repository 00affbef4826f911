"""The single-forecast form (flts.api.forms) accepts exactly what the data contract accepts,
with the windows an independent pandas reading of the rows gives, refuses every bad input, and
every 422 carries the diagnosis' precise messages (flts.api.diagnosis)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from pydantic import ValidationError

from flts.api.diagnosis import diagnose_forecast
from flts.api.forms import RejectedError
from flts.api.schemas import ForecastRequest
from flts.data import last_window
from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError

from .support import Harness, history_records, request_windows
from .test_validation import CASES

SPEC = FeatureSpec()


def reference(document: Any) -> Any:
    """The problems the diagnosis reports (pydantic's words for keys and types), or the
    window an independent pandas reading of valid rows gives."""
    try:
        ForecastRequest.model_validate(document)
    except ValidationError as exc:
        return [str(e["msg"]) for e in exc.errors()]
    try:
        diagnose_forecast(orjson.dumps(document), 10_000, lambda identifier: SPEC)
    except DataValidationError as exc:
        return list(exc.problems)
    frame = pd.DataFrame(document["history"])
    values = frame[list(SPEC.inputs)].apply(pd.to_numeric).to_numpy(np.float64)
    times = pd.to_datetime(frame[SPEC.time_column], format="ISO8601", utc=True)
    times = times.dt.tz_convert(None)
    return last_window(values, times.to_numpy(dtype="datetime64[ns]"), SPEC)


class _Batch:
    """Windows of accepted documents and their horizons (the tests' view of the forms)."""

    def __init__(self, documents: list[Any]) -> None:
        self.windows = request_windows(documents, SPEC)
        self.horizons = [document.get("horizon", 1) for document in documents]


def fast(document: Any) -> Any:
    """What the route makes of one document with a replica serving only 'global' (any other
    identifier names no loaded model): its windows, or ``None`` when refused."""
    if isinstance(document, dict) and document.get("identifier", "global") != "global":
        return None
    return fast_windows([document])


def fast_windows(documents: list[Any], spec: FeatureSpec = SPEC) -> _Batch | None:
    try:
        return _Batch(documents)
    except RejectedError:
        return None


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_bad_input_is_refused(name: str) -> None:
    mutate, _ = CASES[name]
    document = mutate(history_records(12))
    expected = reference(copy.deepcopy(document))
    assert isinstance(expected, list), "the case must be invalid for the reference path"
    assert fast(document) is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_api_messages_are_the_reference_messages(ready: Harness, name: str) -> None:
    """What the API answers equals the diagnosis' messages."""
    mutate, _ = CASES[name]
    document = mutate(history_records(12))
    expected = reference(copy.deepcopy(document))
    response = ready.client.post("/v1/forecast", json=document)
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert len(problems) == len(expected)
    for served, message in zip(problems, expected, strict=True):
        assert served.endswith(message), (served, message)


@pytest.mark.parametrize(
    "document",
    [
        {"history": history_records(10)},
        {"history": history_records(40), "horizon": 1},
        {"identifier": "global", "history": history_records(12, offset=7)},
    ],
)
def test_windows_equal_the_reference_windows(document: dict[str, Any]) -> None:
    expected = reference(copy.deepcopy(document))
    batch = fast(document)
    assert batch is not None
    np.testing.assert_array_equal(batch.windows.x, expected.x)
    np.testing.assert_array_equal(batch.windows.input_times, expected.input_times)
    np.testing.assert_array_equal(batch.windows.target_times, expected.target_times)
    assert batch.horizons == [document.get("horizon", 1)]


def test_batch_equals_items_one_by_one() -> None:
    documents = [{"history": history_records(10 + k, offset=3 * k)} for k in range(5)]
    batch = fast_windows(documents, SPEC)
    assert batch is not None
    for index, document in enumerate(documents):
        single = reference(document)
        np.testing.assert_array_equal(batch.windows.x[index], single.x[0])
        np.testing.assert_array_equal(batch.windows.target_times[index], single.target_times[0])


@pytest.mark.parametrize(
    ("change", "accepted"),
    [
        (lambda rows: rows[2].update(down="12.5"), True),  # numeric string, as in CSV files
        (lambda rows: rows[3].update(time=rows[3]["time"] + "+00:00"), True),  # offsets
        (lambda rows: rows[0].update(note=True), True),  # booleans in an extra column
        (lambda rows: rows[5].update(time="2026-02-30T00:00:00"), False),  # impossible date
    ],
)
def test_unusual_spellings_follow_the_data_contract(change: Any, accepted: bool) -> None:
    rows = history_records(12)
    change(rows)
    expected = reference({"history": rows})
    batch = fast({"history": rows})
    assert (batch is not None) is accepted
    assert isinstance(expected, list) is not accepted
    if batch is not None:
        np.testing.assert_array_equal(batch.windows.x, expected.x)
        np.testing.assert_array_equal(batch.windows.target_times, expected.target_times)


def test_batch_answers_equal_single_answers_at_256(ready: Harness) -> None:
    items = [{"history": history_records(10, offset=k)} for k in range(256)]
    response = ready.client.post("/v1/forecast/batch", json={"requests": items})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 256
    for index in (0, 17, 255):
        single = ready.client.post("/v1/forecast", json=items[index]).json()
        # One matrix product for 256 windows may round the last bit differently.
        assert results[index]["model"] == single["model"]
        [batched], [alone] = results[index]["forecast"], single["forecast"]
        assert batched.pop("time") == alone.pop("time")
        assert batched == pytest.approx(alone, rel=1e-12)


def test_numbers_and_numeric_strings_answer_alike(ready: Harness) -> None:
    rows = history_records(12)
    fast_answer = ready.client.post("/v1/forecast", json={"history": rows})
    # A numeric string is read as CSV cells are; the value is the same number.
    slow_rows = copy.deepcopy(rows)
    slow_rows[0]["down"] = str(slow_rows[0]["down"])
    slow_answer = ready.client.post("/v1/forecast", json={"history": slow_rows})
    assert fast_answer.status_code == slow_answer.status_code == 200
    assert fast_answer.json() == slow_answer.json()
    assert fast_answer.headers["X-Model-Run-Id"] == slow_answer.headers["X-Model-Run-Id"]


def test_bad_input_is_a_422_by_class() -> None:
    assert DataValidationError("x").http_status == 422


@pytest.fixture
def ready(harness: Harness) -> Harness:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    return harness
