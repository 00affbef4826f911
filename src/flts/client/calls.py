"""The calls of :mod:`flts.client` without I/O: what to send for each method and how to read
its answer, shared by the sync and the async client so both behave identically.

Histories go out as JSON records (times as ISO 8601, missing values as ``null`` so the server
names them); forecasts come back as DataFrames indexed by ``(step, <time column>)`` with one
column per target and, per interval level, ``<target>_lower_<level>`` and
``<target>_upper_<level>`` (the names MLflow's ``/invocations`` uses too). The model that
answered is in ``frame.attrs["model"]``.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, Literal, TypeVar, cast

import httpx
import pandas as pd

from flts.client.answers import BulkUpload, StationsObserved

T = TypeVar("T")
#: What an upload takes for a CSV: a path, its bytes, an open binary file or a DataFrame.
CsvSource = str | os.PathLike[str] | bytes | IO[bytes] | pd.DataFrame
#: One file per station in a bulk upload: the station's CSV by its identifier, or paths
#: whose file names' stems are the identifiers.
StationFiles = Mapping[str, CsvSource] | Sequence[str | os.PathLike[str]]
#: How a bulk upload names a station's test file after its training file ``<stem>.csv``.
TEST_SUFFIX = "_test"
#: How every FLTS CSV and every answer names the time column by default.
TIME_COLUMN = "time"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request to ``service`` and the reader of its successful answer."""

    service: Literal["gateway", "api"]
    method: str
    path: str
    read: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, Any] | None = None
    files: Any = None
    data: Mapping[str, Any] | None = None
    #: Statuses that are answers, not errors (``read`` handles them).
    accept: tuple[int, ...] = (200,)
    #: Whether a 503/429 is retried (after Retry-After): only for calls safe to repeat.
    retry: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request``."""
        options: dict[str, Any] = {}
        for name in ("json", "params", "files", "data"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        if self.headers:
            options["headers"] = self.headers
        return options


def _json(response: httpx.Response) -> Any:
    return response.json()


# ----------------------------------------------------------------------------- histories


def history_records(history: pd.DataFrame, time_column: str = TIME_COLUMN) -> list[dict[str, Any]]:
    """``history`` as the records a forecast takes: a ``DatetimeIndex`` becomes the time
    column, times ISO 8601, NaN ``null`` (the server then names the missing cells)."""
    frame = history
    if time_column not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.rename_axis(time_column).reset_index()
    if time_column in frame.columns and pd.api.types.is_datetime64_any_dtype(frame[time_column]):
        frame = frame.assign(**{time_column: frame[time_column].map(pd.Timestamp.isoformat)})
    records = frame.to_dict(orient="records")
    return [
        {
            str(key): None if isinstance(value, float) and math.isnan(value) else value
            for key, value in record.items()
        }
        for record in records
    ]


def forecast_frame(answer: Mapping[str, Any], time_column: str = TIME_COLUMN) -> pd.DataFrame:
    """One native forecast answer as a DataFrame (see the module doc)."""
    records = answer["forecast"]
    frame = pd.DataFrame.from_records(records)
    for key, band in answer.get("intervals", {}).items():
        for position, bounds in enumerate(band):
            for target, pair in bounds.items():
                if isinstance(pair, list):
                    frame.loc[position, f"{target}_lower_{key}"] = pair[0]
                    frame.loc[position, f"{target}_upper_{key}"] = pair[1]
    times = pd.to_datetime(frame.pop(time_column))
    frame.index = pd.MultiIndex.from_arrays(
        [range(1, len(frame) + 1), times], names=["step", time_column]
    )
    frame.attrs["model"] = dict(answer.get("model", {}))
    return frame


def _forecast_body(
    identifier: str | None,
    history: pd.DataFrame | None,
    horizon: int,
    intervals: Sequence[float],
    time_column: str,
) -> dict[str, Any]:
    body: dict[str, Any] = {"horizon": horizon}
    if identifier is not None:
        body["identifier"] = identifier
    if history is not None:
        body["history"] = history_records(history, time_column)
    if intervals:
        body["intervals"] = list(intervals)
    return body


# ----------------------------------------------------------------------------- calls


def forecast(
    identifier: str | None,
    history: pd.DataFrame | None,
    *,
    horizon: int,
    intervals: Sequence[float],
    time_column: str,
) -> Call[pd.DataFrame]:
    """``POST /v1/forecast``; ``history`` None forecasts from the stored observations."""

    def read(response: httpx.Response) -> pd.DataFrame:
        frame = forecast_frame(response.json(), time_column)
        frame.attrs["run_id"] = response.headers.get("x-model-run-id")
        frame.attrs["config_hash"] = response.headers.get("x-config-hash")
        return frame

    body = _forecast_body(identifier, history, horizon, intervals, time_column)
    return Call("api", "POST", "/v1/forecast", read, json=body)


def forecast_batch(
    identifier: str | None,
    histories: Sequence[pd.DataFrame],
    *,
    horizon: int,
    intervals: Sequence[float],
    time_column: str,
) -> Call[list[pd.DataFrame]]:
    """``POST /v1/forecast/batch`` (row form): one forecast per history, all or none."""

    def read(response: httpx.Response) -> list[pd.DataFrame]:
        return [forecast_frame(result, time_column) for result in response.json()["results"]]

    requests = [
        _forecast_body(identifier, history, horizon, intervals, time_column)
        for history in histories
    ]
    return Call("api", "POST", "/v1/forecast/batch", read, json={"requests": requests})


def champion(identifier: str | None) -> Call[dict[str, Any]]:
    params = None if identifier is None else {"identifier": identifier}
    return Call("api", "GET", "/v1/models/champion", _json, params=params)


def models() -> Call[list[dict[str, Any]]]:
    return Call("api", "GET", "/v1/models", lambda response: response.json()["models"])


def status() -> Call[dict[str, Any]]:
    """``GET /readyz`` as a report: ``ready`` is False (with the reason) while not ready."""

    def read(response: httpx.Response) -> dict[str, Any]:
        document: dict[str, Any] = response.json()
        if response.status_code == 200:
            return {"ready": True, **document}
        return {
            "ready": False,
            "status": "unavailable",
            "problems": document.get("problems", []),
            "models": {},
            "degraded": {},
        }

    return Call("api", "GET", "/readyz", read, accept=(200, 503), retry=False)


def _csv_part(name: str, source: CsvSource) -> tuple[str, Any, str]:
    if isinstance(source, pd.DataFrame):
        return f"{name}.csv", source.to_csv(index=False).encode(), "text/csv"
    if isinstance(source, bytes):
        return f"{name}.csv", source, "text/csv"
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        return path.name, path.read_bytes(), "text/csv"
    data = source.read()
    filename = Path(str(getattr(source, "name", f"{name}.csv"))).name  # never a local path
    return filename, io.BytesIO(data), "text/csv"


def _named_part(filename: str, source: CsvSource) -> tuple[str, Any, str]:
    """``source`` sent under ``filename`` whatever its own name: in a bulk upload of several
    files the gateway names each station by its file's stem."""
    _, content, media = _csv_part(filename, source)
    return filename, content, media


def _train_test_parts(train: CsvSource, test: CsvSource | None) -> dict[str, Any]:
    files = {"train": _csv_part("train", train)}
    if test is not None:
        files["test"] = _csv_part("test", test)
    return files


def _task_fields(horizon: int | None, lags: int | None) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if horizon is not None:
        fields["horizon"] = str(horizon)
    if lags is not None:
        fields["lags"] = str(lags)
    return fields


def upload(
    train: CsvSource,
    test: CsvSource | None,
    *,
    identifier: str,
    horizon: int | None,
    lags: int | None,
) -> Call[dict[str, Any]]:
    """``POST /v1/datasets``; never retried (a repeated upload would be a second dataset)."""
    files = _train_test_parts(train, test)
    data: dict[str, Any] = {"identifier": identifier, **_task_fields(horizon, lags)}
    return Call(
        "gateway", "POST", "/v1/datasets", _json, files=files, data=data, accept=(201,), retry=False
    )


def _bulk_upload(response: httpx.Response) -> BulkUpload:
    return cast(BulkUpload, response.json())


def upload_fleet(
    train: CsvSource,
    test: CsvSource | None,
    *,
    identifier_column: str,
    horizon: int | None,
    lags: int | None,
) -> Call[BulkUpload]:
    """``POST /v1/datasets`` of one CSV whose ``identifier_column`` names each row's station.

    A 202 (stored, announcements pending after an outage) is an answer, not an error, and
    nothing is retried: either way the upload is done, and a repeat would be a second group
    of the same stations."""
    if not identifier_column.strip():
        # The gateway reads an empty column name as none: one file would be a single upload.
        raise ValueError("identifier_column must name the column of each row's station")
    files = _train_test_parts(train, test)
    data = {"identifier_column": identifier_column, **_task_fields(horizon, lags)}
    return Call(
        "gateway",
        "POST",
        "/v1/datasets",
        _bulk_upload,
        files=files,
        data=data,
        accept=(201, 202),
        retry=False,
    )


def _station_parts(role: str, files: StationFiles, suffix: str) -> list[tuple[str, Any]]:
    """Repeated ``role`` parts: a mapping's files named ``<station><suffix>.csv``, paths
    under their own names (the gateway matches them and reports a name that does not fit)."""
    if isinstance(files, str | os.PathLike):
        raise TypeError(f"{role} files must be a mapping of station to CSV or a list of paths")
    if isinstance(files, Mapping):
        return [
            (role, _named_part(f"{station}{suffix}.csv", source))
            for station, source in files.items()
        ]
    return [(role, _csv_part(role, path)) for path in files]


def upload_stations(
    trains: StationFiles,
    tests: StationFiles | None,
    *,
    horizon: int | None,
    lags: int | None,
) -> Call[BulkUpload]:
    """``POST /v1/datasets`` of one training file per station (and ``<station>_test.csv``
    test files); read and never retried as :func:`upload_fleet`."""
    parts = _station_parts("train", trains, "")
    if len(parts) < 2:
        # The gateway takes one file without an identifier column as a single upload, which
        # would store it as station "global" rather than under its name.
        raise ValueError(
            "a bulk upload of files needs two or more stations; upload one station with "
            "upload(train, test, identifier=...)"
        )
    if tests is not None:
        parts += _station_parts("test", tests, TEST_SUFFIX)
    return Call(
        "gateway",
        "POST",
        "/v1/datasets",
        _bulk_upload,
        files=parts,
        data=_task_fields(horizon, lags),
        accept=(201, 202),
        retry=False,
    )


def datasets(identifier: str | None) -> Call[list[dict[str, Any]]]:
    params = None if identifier is None else {"identifier": identifier}
    return Call("gateway", "GET", "/v1/datasets", lambda r: r.json()["datasets"], params=params)


def dataset(dataset_id: str) -> Call[dict[str, Any]]:
    return Call("gateway", "GET", f"/v1/datasets/{dataset_id}", _json)


def post_observations(
    identifier: str, rows: pd.DataFrame, time_column: str
) -> Call[dict[str, Any]]:
    """``POST /v1/observations`` (idempotent on identifier and time, so safe to retry)."""
    body = {"identifier": identifier, "rows": history_records(rows, time_column)}
    return Call("gateway", "POST", "/v1/observations", _json, json=body)


def post_fleet_observations(
    stations: Mapping[str, pd.DataFrame], time_column: str
) -> Call[StationsObserved]:
    """``POST /v1/observations`` of many stations (``{"stations": [...]}``): a 200 reports
    each station stored or refused whole; retried like the single form (idempotent on
    identifier and time, so a repeat stores nothing twice)."""
    body = {
        "stations": [
            {"identifier": identifier, "rows": history_records(rows, time_column)}
            for identifier, rows in stations.items()
        ]
    }
    return Call(
        "gateway",
        "POST",
        "/v1/observations",
        lambda response: cast(StationsObserved, response.json()),
        json=body,
    )


# ----------------------------------------------------------------------------- retries

#: Wait before retrying a 503/429 that says nothing of when to come back.
DEFAULT_RETRY_SECONDS = 1.0


def retry_delay(error: Exception, attempt: int, retries: int, max_wait: float) -> float | None:
    """Seconds to wait before retry ``attempt + 1`` of a call refused with ``error``, or None
    to give up: only 503 and 429 are retried, at most ``retries`` times, each wait the
    server's ``Retry-After`` capped at ``max_wait``."""
    from flts.client.errors import Unavailable

    if not isinstance(error, Unavailable) or attempt >= retries:
        return None
    advised = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_SECONDS
    return min(advised, max_wait)
