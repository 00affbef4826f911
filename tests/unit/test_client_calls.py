"""flts.client's logic without a server: refusals typed from each error body the services
send, the retry rule, histories going out as the records the forecast route takes, and the
file parts of a bulk upload named as the gateway matches them."""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pandas as pd
import pytest

from flts.client import (
    Conflict,
    FLTSClientError,
    NotFound,
    Overloaded,
    ServerError,
    Unavailable,
    ValidationFailed,
)
from flts.client.calls import (
    forecast_frame,
    history_records,
    post_fleet_observations,
    retry_delay,
    upload_fleet,
    upload_stations,
)
from flts.client.errors import error_from


def _response(status: int, body: object, **headers: str) -> httpx.Response:
    request = httpx.Request("POST", "http://flts/v1/forecast")
    return httpx.Response(status, json=body, headers=headers, request=request)


@pytest.mark.parametrize(
    ("body", "problems"),
    [
        (
            {"type": "about:blank", "status": 422, "detail": "a; b", "problems": ["a", "b"]},
            ["a", "b"],
        ),
        ({"detail": "bad csv", "problems": ["row 3: x"]}, ["row 3: x"]),  # the gateway's shape
        ({"detail": "no such thing"}, ["no such thing"]),
        ({"detail": [{"loc": ["body"], "msg": "Field required"}]}, ["Field required"]),
    ],
)
def test_problems_are_read_from_every_error_body(body: object, problems: list[str]) -> None:
    error = error_from(_response(422, body))
    assert isinstance(error, ValidationFailed)
    assert error.problems == problems
    assert error.status == 422
    assert "/v1/forecast" in str(error)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, ValidationFailed),
        (404, NotFound),
        (409, Conflict),
        (500, ServerError),
        (502, ServerError),
    ],
)
def test_status_picks_the_class(status: int, kind: type[FLTSClientError]) -> None:
    assert type(error_from(_response(status, {"detail": "x"}))) is kind


def test_only_unavailable_and_overloaded_are_retried_within_the_bounds() -> None:
    unavailable = error_from(_response(503, {"detail": "loading"}, **{"Retry-After": "7"}))
    assert isinstance(unavailable, Unavailable)
    assert unavailable.retry_after == 7.0
    assert retry_delay(unavailable, 0, 3, 30.0) == 7.0
    assert retry_delay(unavailable, 0, 3, 2.5) == 2.5  # capped
    assert retry_delay(unavailable, 3, 3, 30.0) is None  # spent
    overloaded = error_from(_response(429, {"detail": "busy"}))
    assert isinstance(overloaded, Overloaded)
    assert retry_delay(overloaded, 0, 3, 30.0) == 1.0  # no Retry-After: one second
    assert retry_delay(error_from(_response(422, {"detail": "x"})), 0, 3, 30.0) is None


def test_history_records_carry_iso_times_and_nulls() -> None:
    index = pd.date_range("2026-01-01", periods=2, freq="2min", name="time")
    frame = pd.DataFrame({"down": [1.5, math.nan]}, index=index)
    assert history_records(frame) == [
        {"time": "2026-01-01T00:00:00", "down": 1.5},
        {"time": "2026-01-01T00:02:00", "down": None},
    ]


def test_forecast_frame_indexes_steps_and_times_with_interval_columns() -> None:
    answer = {
        "forecast": [
            {"time": "2026-01-01T00:02:00", "down": 3.0},
            {"time": "2026-01-01T00:04:00", "down": 4.0},
        ],
        "intervals": {
            "80": [
                {"time": "2026-01-01T00:02:00", "down": [2.0, 5.0]},
                {"time": "2026-01-01T00:04:00", "down": [1.0, 6.0]},
            ]
        },
        "model": {"run_id": "r1"},
    }
    frame = forecast_frame(answer)
    assert list(frame.index) == [
        (1, pd.Timestamp("2026-01-01T00:02:00")),
        (2, pd.Timestamp("2026-01-01T00:04:00")),
    ]
    assert frame["down"].tolist() == [3.0, 4.0]
    assert frame["down_lower_80"].tolist() == [2.0, 1.0]
    assert frame["down_upper_80"].tolist() == [5.0, 6.0]
    assert frame.attrs["model"] == {"run_id": "r1"}


def test_station_files_are_named_by_their_key_and_paths_keep_their_names(tmp_path: Path) -> None:
    export = tmp_path / "export.csv"
    export.write_bytes(b"time,down\n")
    keyed = upload_stations(
        {"A": b"a", "B": export}, {"A": pd.DataFrame({"down": [1.0]})}, horizon=None, lags=3
    )
    assert [(role, part[0]) for role, part in keyed.files] == [
        ("train", "A.csv"),
        ("train", "B.csv"),
        ("test", "A_test.csv"),
    ]
    assert keyed.files[1][1][1] == b"time,down\n"
    assert keyed.data == {"lags": "3"}
    assert (keyed.accept, keyed.retry) == ((201, 202), False)
    (tmp_path / "Sants.csv").write_bytes(b"x")
    paths = upload_stations([export, tmp_path / "Sants.csv"], None, horizon=None, lags=None)
    assert [part[0] for _, part in paths.files] == ["export.csv", "Sants.csv"]


def test_a_bulk_call_that_the_gateway_would_take_as_one_station_is_refused() -> None:
    with pytest.raises(ValueError, match="two or more"):
        upload_stations({"A": b"a"}, {"A": b"t"}, horizon=None, lags=None)
    with pytest.raises(ValueError, match="identifier_column"):
        upload_fleet(b"a", None, identifier_column=" ", horizon=None, lags=None)
    column = upload_fleet(b"a", None, identifier_column="cell", horizon=2, lags=None)
    assert column.data == {"identifier_column": "cell", "horizon": "2"}
    assert (column.accept, column.retry) == ((201, 202), False)


def test_fleet_observations_go_out_per_station_in_order() -> None:
    index = pd.date_range("2026-01-01", periods=2, freq="2min", name="time")
    rows = pd.DataFrame({"down": [1.0, math.nan]}, index=index)
    call = post_fleet_observations({"S2": rows.iloc[:1], "S1": rows}, "time")
    assert call.json == {
        "stations": [
            {"identifier": "S2", "rows": history_records(rows.iloc[:1])},
            {"identifier": "S1", "rows": history_records(rows)},
        ]
    }
    assert call.retry is True
