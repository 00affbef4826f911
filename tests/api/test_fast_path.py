"""The fast request path never disagrees with the reference path: it accepts only what the
reference path accepts (same windows, same answers) and defers every bad input to it, so
every 422 carries the same precise messages either way."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from flts.api.errors import ApiError
from flts.api.fastpath import body_may_be_fast, fast_windows
from flts.api.forecasting import request_window
from flts.api.schemas import ForecastRequest
from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError

from .support import Harness, history_records
from .test_validation import CASES

SPEC = FeatureSpec()


def reference(document: Any) -> Any:
    """The reference path's problems (as the API reports them) or its window."""
    try:
        request = ForecastRequest.model_validate(document)
    except ValidationError as exc:
        return [str(e["msg"]) for e in exc.errors()]
    try:
        return request_window(request, SPEC)
    except DataValidationError as exc:
        return list(exc.problems)


def fast(document: Any) -> Any:
    """The fast path as the route runs it, with a replica serving only 'global'
    (``ForecastService.fast_resolve`` defers any other identifier)."""
    import orjson

    body = orjson.dumps(document)
    if not body_may_be_fast(body):
        return None
    if isinstance(document, dict) and document.get("identifier", "global") != "global":
        return None
    return fast_windows([orjson.loads(body)], SPEC)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_bad_input_is_left_to_the_reference_path(name: str) -> None:
    mutate, _ = CASES[name]
    document = mutate(history_records(12))
    expected = reference(copy.deepcopy(document))
    assert isinstance(expected, list), "the case must be invalid for the reference path"
    assert fast(document) is None


@pytest.mark.parametrize("name", sorted(CASES))
def test_api_messages_are_the_reference_messages(ready: Harness, name: str) -> None:
    """What the API answers (fast path first) equals the reference path's messages."""
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
def test_fast_windows_equal_the_reference_windows(document: dict[str, Any]) -> None:
    expected = reference(copy.deepcopy(document))
    batch = fast(document)
    assert batch is not None
    np.testing.assert_array_equal(batch.windows.x, expected.x)
    np.testing.assert_array_equal(batch.windows.input_times, expected.input_times)
    np.testing.assert_array_equal(batch.windows.target_times, expected.target_times)
    assert batch.horizons == [document.get("horizon", 1)]


def test_fast_batch_equals_items_one_by_one() -> None:
    documents = [{"history": history_records(10 + k, offset=3 * k)} for k in range(5)]
    batch = fast_windows(documents, SPEC)
    assert batch is not None
    for index, document in enumerate(documents):
        single = reference(document)
        np.testing.assert_array_equal(batch.windows.x[index], single.x[0])
        np.testing.assert_array_equal(batch.windows.target_times[index], single.target_times[0])


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: rows[2].update(down="12.5"),  # numeric string: reference accepts
        lambda rows: rows[3].update(time=rows[3]["time"] + "+00:00"),  # offsets
        lambda rows: rows[0].update(note=True),  # booleans anywhere in the body
        lambda rows: rows[5].update(time="2026-02-30T00:00:00"),  # impossible date
    ],
)
def test_unusual_inputs_defer_to_the_reference_path(change: Any) -> None:
    rows = history_records(12)
    change(rows)
    assert fast({"history": rows}) is None


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


def test_reference_and_fast_answers_are_identical(ready: Harness) -> None:
    rows = history_records(12)
    fast_answer = ready.client.post("/v1/forecast", json={"history": rows})
    # A numeric string takes the reference path; the value is the same number.
    slow_rows = copy.deepcopy(rows)
    slow_rows[0]["down"] = str(slow_rows[0]["down"])
    slow_answer = ready.client.post("/v1/forecast", json={"history": slow_rows})
    assert fast_answer.status_code == slow_answer.status_code == 200
    assert fast_answer.json() == slow_answer.json()
    assert fast_answer.headers["X-Model-Run-Id"] == slow_answer.headers["X-Model-Run-Id"]


def test_api_error_class_is_unchanged() -> None:
    assert ApiError.invalid("x").status == 422


@pytest.fixture
def ready(harness: Harness) -> Harness:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    return harness
