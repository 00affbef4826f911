"""Every bad request gets its precise 4xx reason (the same checks as CSV uploads), and the
no-model state is a 503 with Retry-After; never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .support import Harness, history_records

Case = Callable[[list[dict[str, Any]]], Any]


def _drop(column: str) -> Case:
    def mutate(rows: list[dict[str, Any]]) -> Any:
        for row in rows:
            del row[column]
        return {"history": rows}

    return mutate


def _set(index: int, column: str, value: Any) -> Case:
    def mutate(rows: list[dict[str, Any]]) -> Any:
        rows[index][column] = value
        return {"history": rows}

    return mutate


def _swap_times(rows: list[dict[str, Any]]) -> Any:
    rows[4]["time"], rows[5]["time"] = rows[5]["time"], rows[4]["time"]
    return {"history": rows}


def _duplicate_time(rows: list[dict[str, Any]]) -> Any:
    rows[6]["time"] = rows[5]["time"]
    return {"history": rows}


CASES: dict[str, tuple[Case, str]] = {
    "missing input column": (_drop("rb_up"), "missing input columns ['rb_up']"),
    "missing time column": (_drop("time"), "missing time column 'time'"),
    "too few rows": (lambda rows: {"history": rows[:7]}, "too few rows: 7"),
    "empty history": (lambda rows: {"history": []}, "too few rows: 0"),
    "null value": (_set(3, "down", None), "column 'down' has missing values (null) at history[3]"),
    "absent value": (
        lambda rows: (rows[2].pop("up"), {"history": rows})[1],
        "column 'up' has missing values (null) at history[2]",
    ),
    "infinite value": (_set(8, "up", "Infinity"), "column 'up' has infinite values at history[8]"),
    "infinite string": (_set(1, "up", "-inf"), "column 'up' has infinite values at history[1]"),
    "non-numeric": (_set(2, "rb_down", "lots"), "column 'rb_down' is not numeric at history[2]"),
    "boolean": (_set(2, "mcs_up", True), "column 'mcs_up' is not numeric at history[2]"),
    "nested": (_set(0, "rb_up_var", [1, 2]), "column 'rb_up_var' is not numeric at history[0]"),
    "unsorted times": (_swap_times, "timestamps are not sorted"),
    "duplicated times": (_duplicate_time, "duplicated timestamps at history[6]"),
    "bad time": (_set(1, "time", "yesterday"), "unparsable time at history[1]: 'yesterday'"),
    "irregular grid": (_set(11, "time", "2099-01-01T00:00:00"), "irregular sampling"),
    "horizon too long": (
        lambda rows: {"history": rows, "horizon": 2},
        "horizon 2 is out of range: this model forecasts 1 to 1 steps",
    ),
    "horizon zero": (lambda rows: {"history": rows, "horizon": 0}, "horizon: Input should be"),
    "unknown field": (lambda rows: {"history": rows, "lags": 3}, "lags: Extra inputs"),
    "history not a list": (lambda rows: {"history": {"a": 1}}, "history: Input should be"),
    "row not an object": (lambda rows: {"history": [*rows, 5]}, "history[12]: Input should be"),
    "bad identifier": (
        lambda rows: {"identifier": "../x", "history": rows},
        "identifier: Value error, identifier '../x' must be",
    ),
    "not an object": (lambda rows: [1, 2], "Input should be a valid dictionary"),
}


@pytest.fixture
def ready(harness: Harness) -> Harness:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    return harness


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_request_is_422_with_its_reason(ready: Harness, name: str) -> None:
    mutate, reason = CASES[name]
    response = ready.client.post("/v1/forecast", json=mutate(history_records(12)))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 422
    assert any(reason in problem for problem in body["problems"]), body["problems"]


def test_every_problem_is_reported_at_once(ready: Harness) -> None:
    rows = history_records(12)
    rows[2]["down"] = "x"
    rows[9]["up"] = None
    response = ready.client.post("/v1/forecast", json={"history": rows, "horizon": 3})
    problems = response.json()["problems"]
    assert len(problems) == 3, problems


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"history": [', "malformed JSON"),
        (b'{"history": [{"down": NaN}]}', "malformed JSON"),
        (b'{"history": [{"down": 1e999}]}', "number is infinity"),
        (b"", "the request body is empty"),
    ],
)
def test_malformed_json_is_422(ready: Harness, body: bytes, reason: str) -> None:
    response = ready.client.post(
        "/v1/forecast", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert reason in response.json()["detail"]


def test_too_many_rows_is_413(ready: Harness) -> None:
    response = ready.client.post("/v1/forecast", json={"history": history_records(201)})
    assert response.status_code == 413
    assert "201 rows, over the limit of 200 rows" in response.json()["detail"]
    batch = ready.client.post(
        "/v1/forecast/batch",
        json={"requests": [{"history": history_records(12)}, {"history": history_records(201)}]},
    )
    assert batch.status_code == 413
    assert batch.json()["detail"].startswith("requests[1].history has 201 rows")


def test_oversized_body_is_413_before_parsing(ready: Harness) -> None:
    limit = 200 * 1024 + 64 * 1024
    response = ready.client.post(
        "/v1/forecast", content=b"[" * (limit + 1), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_no_model_is_503_with_retry_after(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(pointer_poll_seconds=3.0)
    client = harness.client
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["Retry-After"] == "3"
    for response in (
        client.post("/v1/forecast", json={"history": history_records(12)}),
        client.post("/v1/forecast", json={"identifier": "PobleSec", "history": []}),
        client.post("/v1/forecast/batch", json={"requests": [{"history": history_records(12)}]}),
        client.get("/v1/models/champion"),
    ):
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "3"
        assert "no model is loaded" in response.json()["detail"]


def test_unknown_route_and_method_are_problem_documents(ready: Harness) -> None:
    missing = ready.client.get("/v2/nothing")
    assert missing.status_code == 404
    assert missing.json()["status"] == 404
    wrong = ready.client.get("/v1/forecast")
    assert wrong.status_code == 405
