"""MLflow's scoring protocol (what ``mlflow models serve`` answers) over the forecast path::

    GET  /ping          200 {"status": "ready"} | 503 + Retry-After   open (a probe)
    POST /invocations   {"predictions": [records]}                   key, scope forecast

A request is one history, as the DataFrame a pyfunc model would be given, in any of MLflow's
input formats: ``dataframe_split`` (``columns`` and ``data`` rows; ``index`` ignored),
``dataframe_records`` (row objects), ``instances`` (row objects) or ``inputs`` (row objects,
or an object of columns), as ``application/json``; or a CSV body (``text/csv``, a header row
and the rows). Row values and times are what the native history takes. ``params`` carries
the native options: ``identifier`` (which station's champion; default as the native route:
``global`` or the only one loaded), ``horizon`` and ``intervals``.

The request becomes the body of ``POST /v1/forecast`` (``history`` = the rows), answered by
:class:`~flts.api.service.ForecastService` with its validation (422 with every problem, rows
named ``history[i]`` by their position), numbers and lineage headers. The answer is
``{"predictions": records}``: the native forecast records (time and targets, one per step)
with, per interval level, ``<target>_lower_<level>`` and ``<target>_upper_<level>`` columns:
a flat table, as MLflow's clients turn ``predictions`` into a DataFrame. What is not a scoring
request (no or several input formats, unknown ``params``, a split whose rows do not match its
columns) is a 400; another content type a 415. Errors are problem documents with the
``error_code`` and ``message`` members MLflow's clients read (docs/clients.md).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, FastAPI
from starlette.responses import Response
from starlette.types import Scope

from flts.api.asgi import Answer, ForecastRoute, InferenceApp
from flts.api.errors import problem_response
from flts.api.forms import validation_problem
from flts.api.protocols import answered_by, error_responses
from flts.api.protocols.schemas import SCORING_FORMS, MlflowError, Ping, Predictions
from flts.api.routes import body_schema, documentation_only
from flts.api.service import ForecastService, Served
from flts.exceptions import (
    DataValidationError,
    FLTSError,
    ModelUnavailableError,
    RequestError,
    UnsupportedMediaError,
)

INVOCATIONS = "/invocations"
PING = "/ping"
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
#: ``params`` passed on to the native form (which validates their values).
PARAMS = ("identifier", "horizon", "intervals")
#: MLflow's error codes (``mlflow.protos.databricks_pb2``) by HTTP status.
ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "REQUEST_LIMIT_EXCEEDED",
    415: "BAD_REQUEST",
    422: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_JSON = "application/json"
_CSV = "text/csv"


class _Scoring(msgspec.Struct, forbid_unknown_fields=True):
    dataframe_split: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    dataframe_records: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    instances: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    inputs: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    params: dict[str, Any] | msgspec.UnsetType | None = msgspec.UNSET


class _Split(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    data: list[list[Any]]
    index: list[Any] | None = None


_SCORING = msgspec.json.Decoder(_Scoring)
_SPLIT = msgspec.json.Decoder(_Split)


def error(exc: FLTSError) -> Response:
    """A refusal as MLflow's clients read it: ``error_code`` and ``message``, within the
    problem document."""
    code = ERROR_CODES.get(exc.http_status, "INTERNAL_ERROR")
    return problem_response(
        exc.http_status,
        exc.problems,
        exc.headers(),
        extensions=lambda detail: {"error_code": code, "message": detail},
    )


def _refuse(message: str) -> RequestError:
    return RequestError(f"not an MLflow scoring request: {message}")


def _media_type(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: str = value.decode("latin-1")
            return media.split(";")[0].strip().lower()
    return ""


def _json_history(body: bytes) -> tuple[bytes, dict[str, Any]]:
    """The history (a JSON array of row objects) and ``params`` of a JSON scoring body."""
    try:
        request = _SCORING.decode(body)
    except msgspec.ValidationError as exc:
        raise _refuse(
            f"{validation_problem(exc)} (the input formats are {list(FORMATS)}, plus params)"
        ) from exc
    except msgspec.DecodeError as exc:
        raise _refuse(f"malformed JSON: {exc}") from exc
    given = [name for name in FORMATS if getattr(request, name) is not msgspec.UNSET]
    if len(given) != 1:
        raise _refuse(f"give exactly one of {list(FORMATS)} (got {given or 'none'})")
    [name] = given
    raw: msgspec.Raw = getattr(request, name)
    params = request.params if isinstance(request.params, dict) else {}
    if name == "dataframe_split":
        return _split_rows(raw), params
    if name == "inputs":
        columns = orjson.loads(bytes(raw))
        if isinstance(columns, dict):
            return _column_rows(columns), params
    return bytes(raw), params  # row objects, as the native history takes them


def _split_rows(raw: msgspec.Raw) -> bytes:
    try:
        split = _SPLIT.decode(raw)
    except msgspec.ValidationError as exc:
        raise _refuse(f"dataframe_split.{validation_problem(exc)}") from exc
    width = len(split.columns)
    ragged = [i for i, row in enumerate(split.data) if len(row) != width]
    if ragged:
        raise _refuse(
            f"dataframe_split.data rows {ragged[:5]} do not have one value per column ({width})"
        )
    return orjson.dumps([dict(zip(split.columns, row, strict=True)) for row in split.data])


def _column_rows(columns: dict[str, Any]) -> bytes:
    lengths = {len(v) if isinstance(v, list) else -1 for v in columns.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise _refuse("inputs as an object needs one array per column, all of one length")
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    return orjson.dumps(rows)


def _csv_history(body: bytes) -> bytes:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"a CSV body must be UTF-8: {exc}") from exc
    rows = list(csv.DictReader(io.StringIO(text)))
    if any(None in row for row in rows):
        raise _refuse("CSV rows with more values than the header has columns")
    return orjson.dumps(rows)


async def invocations(
    service: ForecastService, media_type: str, body: bytes, served: Served
) -> bytes:
    """``POST /invocations``: the rows as a native history, answered by the service, the
    answer as ``predictions`` (see the module doc)."""
    if media_type == _JSON:
        history, params = _json_history(body)
    elif media_type == _CSV:
        history, params = _csv_history(body), {}
    else:
        raise UnsupportedMediaError(
            f"content type {media_type or 'none'!r}: send application/json (dataframe_split, "
            "dataframe_records, instances or inputs) or text/csv"
        )
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise _refuse(f"unknown params {unknown}; the params are {list(PARAMS)}")
    identifier = params.get("identifier")
    if isinstance(identifier, str):
        await service.serving(identifier)  # 404 for a name never promoted
    native = b'{"history":' + history
    if params:
        try:
            native += b"," + orjson.dumps(params)[1:-1]
        except orjson.JSONEncodeError as exc:  # an integer past 64 bits, which JSON allows
            raise DataValidationError(f"params: {exc}") from exc
    native += b"}"
    answer = orjson.loads(await service.forecast(native, served))
    return orjson.dumps({"predictions": predictions(answer)})


def predictions(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The native answer's records, with interval bounds as flat columns."""
    records: list[dict[str, Any]] = answer["forecast"]
    for key, band in answer.get("intervals", {}).items():
        for record, bounds in zip(records, band, strict=True):
            for target, pair in bounds.items():
                if isinstance(pair, list):
                    record[f"{target}_lower_{key}"], record[f"{target}_upper_{key}"] = pair
    return records


# ----------------------------------------------------------------------------- registration


def register(framework: FastAPI, app: InferenceApp) -> None:
    """Serve MLflow's scoring protocol on ``app`` (see the module doc)."""
    service = app.service
    holder = service.holder

    def bind(scope: Scope) -> Answer:
        media_type = _media_type(scope)

        async def answer(body: bytes, served: Served) -> bytes:
            return await invocations(service, media_type, body, served)

        return answer

    route = ForecastRoute.scoped(INVOCATIONS, bind, service.max_body_bytes, render=error)
    app.add_route(INVOCATIONS, route)
    app.add_probe(PING)
    app.add_error_style(lambda path: path in (INVOCATIONS, PING), error)
    poll = service.settings.pointer_poll_seconds

    router = APIRouter(tags=["MLflow scoring protocol"])

    @router.get(
        PING,
        summary="MLflow scoring readiness: a champion is loaded",
        response_model=Ping,
        responses=error_responses(MlflowError, 503),
    )
    async def ping() -> Response:
        if holder.snapshot():
            return Response(orjson.dumps({"status": "ready"}), media_type=_JSON)
        return error(ModelUnavailableError("no model is loaded yet", retry_after=poll))

    framework.include_router(router)
    body = body_schema(*SCORING_FORMS)
    body["requestBody"]["content"][_CSV] = {"schema": {"type": "string"}}
    framework.add_api_route(
        INVOCATIONS,
        documentation_only,
        methods=["POST"],
        response_model=Predictions,
        openapi_extra=body,
        responses=error_responses(
            MlflowError, 400, 401, 403, 404, 413, 415, 421, 422, 429, 503, 504
        ),
        summary="MLflow scoring: a forecast of one history",
        tags=["MLflow scoring protocol"],
    )
    answered_by(framework, INVOCATIONS, route)
