"""The gateway's observation routes.

::

    POST /v1/observations                     JSON {"identifier": NAME, "rows": [{...}, ...]}, or
                                              text/csv with ?identifier=NAME; answers the counts
                                              (accepted, duplicates) and the newest stored time;
                                              or JSON {"stations": [{"identifier", "rows"}, ...]}
                                              for many stations: 200 with each station's result
                                              ("stored" with its counts, or "rejected" with its
                                              problems) when any was stored
    GET  /v1/observations/{identifier}        stored rows, ?start=&end= (ISO 8601), newest
                                              ``limit`` (default 1,000) of them, oldest first

Errors: 404 for an identifier with no champion yet, 413 over ``live.max_rows_per_request`` rows
(or a body over what that many rows could take), 415 for another content type, 422 with every
problem otherwise (cells, grid, late window, conflicting re-sends); nothing is stored then.
In the many-station form the row limit counts the whole request, and a station's 404 or 422
is reported in its result while the others are stored; only when no station was stored does
the request answer 404 (every station unknown) or 422 (every station's problems).
They are problem documents (:mod:`flts.api.errors`), declared with both bodies in the
gateway's OpenAPI document.
"""

from __future__ import annotations

import io
import json
from typing import Annotated, Any

import pandas as pd
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from flts.api.errors import problem_responses
from flts.api.routes import body_schema
from flts.data.reader import read_observation_csv
from flts.events import IDENTIFIER_SCHEMA, Identifier, ObservationCell
from flts.exceptions import (
    DataValidationError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from flts.live.ingest import ObservationIngest
from flts.live.observations import cell_value

#: Bytes one observation row may take in a body (a Barcelona row is ~120 bytes as JSON).
BYTES_PER_ROW = 1024


class ObservationBatch(BaseModel):
    """``POST /v1/observations`` as JSON."""

    model_config = ConfigDict(extra="forbid")

    identifier: Identifier
    rows: list[dict[str, ObservationCell]] = Field(min_length=1)


class StationBatches(BaseModel):
    """``POST /v1/observations`` as JSON for many stations at once: each station's rows are
    checked and stored on their own (one bad station does not hold back the others)."""

    model_config = ConfigDict(extra="forbid")

    stations: list[ObservationBatch] = Field(min_length=1)


_BATCH: TypeAdapter[ObservationBatch] = TypeAdapter(ObservationBatch)
_STATIONS: TypeAdapter[StationBatches] = TypeAdapter(StationBatches)
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def _checked(adapter: TypeAdapter[Any], value: Any, what: str) -> Any:
    try:
        return (
            adapter.validate_python(value) if what == "identifier" else adapter.validate_json(value)
        )
    except ValidationError as exc:
        raise DataValidationError(
            *(
                f"{'.'.join(map(str, e['loc'])) or what}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()[:10]
            )
        ) from exc


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"body of {declared} bytes is over the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def observation_router(ingest: ObservationIngest) -> APIRouter:
    """The routes above over one :class:`ObservationIngest`."""
    router = APIRouter()
    limit = ingest.max_rows * BYTES_PER_ROW

    body = body_schema(ObservationBatch, StationBatches)
    body["requestBody"]["content"]["text/csv"] = {
        "schema": {"type": "string", "description": "A header row and the rows (as uploaded)."}
    }

    @router.post(
        "/v1/observations",
        response_model=None,
        responses=problem_responses(404, 413, 415, 422, 503),
        openapi_extra=body,
    )
    async def post_observations(
        request: Request,
        identifier: Annotated[
            str | None,
            Query(
                description="The station of a text/csv body (a JSON body names its own).",
                json_schema_extra=IDENTIFIER_SCHEMA,
            ),
        ] = None,
    ) -> JSONResponse:
        """Append a station's new rows, or several stations' (idempotent on identifier and
        time)."""
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await _body(request, limit)
        if media == "application/json":
            if identifier is not None:
                raise DataValidationError("give the identifier in the JSON body, not the query")
            if _names_stations(body):
                return await _many(ingest, _checked(_STATIONS, body, "body"))
            batch: ObservationBatch = _checked(_BATCH, body, "body")
            done = await run_in_threadpool(
                ingest.ingest_records, batch.identifier, [dict(r) for r in batch.rows]
            )
        elif media == "text/csv":
            if identifier is None:
                raise DataValidationError("a CSV body needs ?identifier=NAME")
            name = _checked(_IDENTIFIER, identifier, "identifier")
            done = await run_in_threadpool(
                ingest.ingest_frame,
                name,
                lambda: read_observation_csv(io.BytesIO(body), ingest.spec),
            )
        else:
            raise UnsupportedMediaError(
                "send observations as application/json ({'identifier', 'rows'} or {'stations': "
                "[{'identifier', 'rows'}, ...]}) or text/csv"
            )
        return JSONResponse(done.summary())

    @router.get(
        "/v1/observations/{identifier}",
        response_model=None,
        responses=problem_responses(422, 503),
    )
    async def get_observations(
        identifier: Annotated[str, Path(json_schema_extra=IDENTIFIER_SCHEMA)],
        start: Annotated[str | None, Query(json_schema_extra={"format": "date-time"})] = None,
        end: Annotated[str | None, Query(json_schema_extra={"format": "date-time"})] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 1_000,
    ) -> JSONResponse:
        """A station's stored rows, oldest first (the newest ``limit`` of the range)."""
        name = _checked(_IDENTIFIER, identifier, "identifier")
        bounds = [_time(value, field) for value, field in ((start, "start"), (end, "end"))]
        frame = await run_in_threadpool(ingest.log.read, name, *bounds)
        frame = frame.iloc[-limit:]
        spec = ingest.spec
        rows = [
            {
                spec.time_column: t.isoformat(),
                **{c: cell_value(v) for c, v in zip(frame.columns, values, strict=True)},
            }
            for t, values in zip(frame.index, frame.to_numpy(), strict=True)
        ]
        return JSONResponse({"identifier": name, "count": len(rows), "rows": rows})

    return router


def _names_stations(body: bytes) -> bool:
    """Whether a JSON body is the many-station form (an object with ``stations``)."""
    try:
        document = json.loads(body)
    except ValueError:
        return False  # the single form's validation reports the broken JSON
    return isinstance(document, dict) and "stations" in document


async def _many(ingest: ObservationIngest, batches: StationBatches) -> JSONResponse:
    """The many-station form: 200 with one result per station when any station was stored;
    when none was, 404 if every station is unknown, else 422 with every station's problems."""
    names = [batch.identifier for batch in batches.stations]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataValidationError(
            *(
                f"stations: {name!r} appears more than once; send its rows together"
                for name in twice
            )
        )
    outcome = await run_in_threadpool(
        ingest.ingest_stations,
        [(batch.identifier, [dict(row) for row in batch.rows]) for batch in batches.stations],
    )
    if not outcome.stored:
        problems = [f"{name}: {p}" for name, exc in outcome.rejected for p in exc.problems]
        if all(isinstance(exc, NotFoundError) for _, exc in outcome.rejected):
            raise NotFoundError(*problems)
        raise DataValidationError(*problems)
    return JSONResponse(outcome.summary())


def _time(value: str | None, field: str) -> pd.Timestamp | None:
    if value is None:
        return None
    parsed = pd.to_datetime(value, format="ISO8601", errors="coerce", utc=True)
    if pd.isna(parsed):
        raise DataValidationError(f"{field}: {value!r} is not an ISO 8601 time")
    # Any ISO 8601 time is a valid bound (the OpenAPI document says date-time); stored rows
    # lie within the nanosecond range, so a bound beyond it means the same as that range's end.
    moment = pd.Timestamp(parsed).tz_convert(None)
    return min(max(moment, pd.Timestamp.min), pd.Timestamp.max).as_unit("ns")
