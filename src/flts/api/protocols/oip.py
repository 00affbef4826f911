"""The Open Inference Protocol v2 (KServe's "V2", Triton's HTTP/REST API) over the forecast
path, JSON only (the binary tensor extension is refused with a 400 that says so)::

    GET  /v2/health/live            {"live": true}                      open (a probe)
    GET  /v2/health/ready           {"ready": true} | 503 + Retry-After open (a probe)
    GET  /v2                        server metadata                     key, scope forecast
    GET  /v2/models/{name}          model metadata (the feature spec)   key, scope forecast
    GET  /v2/models/{name}/ready    {"name", "ready": true} | 404 | 503  key, scope forecast
    POST /v2/models/{name}/infer    a forecast                          key, scope forecast

A model's ``name`` is its identifier (``global``, ``PobleSec``); its only version is the run
it serves (``model_version`` of every answer). A window is the input tensor ``window``,
``FP64`` or ``FP32``, shape ``[rows, features]`` (one window) or ``[batch, rows, features]``,
``rows`` at least the model's lags (the last ``lags`` rows are used), ``features`` in the
champion's feature order (``parameters.columns`` of the metadata; another order may be named
with the request parameter ``columns``), ``data`` row-major, flat or nested; and the input
``end_time``, ``BYTES``, one ISO 8601 time per window: the time of its last row. Request
parameters ``horizon`` (default 1) and ``intervals`` (levels in percent) are those of the
native routes. The answer's outputs are ``forecast`` (``FP64``, ``[horizon, targets]`` or
``[batch, horizon, targets]``, the targets in ``parameters.targets``), ``time`` (``BYTES``,
the target times) and, per interval level, ``forecast_lower_<level>`` and
``forecast_upper_<level>``; the request's ``outputs`` may pick some of them.

The request becomes the tensor form of ``POST /v1/forecast/batch`` (``columns``, ``end_times``,
``windows``), answered by :class:`~flts.api.service.ForecastService`: its validation (422 with
every problem, windows named ``windows[i]`` by their batch index), its numbers (JSON numbers
are read as float64 whatever the declared datatype, so FP32 and FP64 give the native answer)
and its lineage headers. What is not a v2 request (bad JSON, unknown fields, a tensor whose
data does not fill its shape) is a 400 before that. Errors are problem documents with the
``error`` member v2 clients read (docs/clients.md).
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, FastAPI
from starlette.responses import Response
from starlette.types import Scope

import flts
from flts.api.asgi import Answer, ForecastRoute, InferenceApp
from flts.api.errors import problem_response
from flts.api.forms import validation_problem
from flts.api.holder import LoadedModel
from flts.api.protocols import answered_by, error_responses
from flts.api.protocols.schemas import InferRequest, InferResponse, ModelMetadata, V2Error
from flts.api.routes import body_schema, documentation_only
from flts.api.service import ForecastService, Served
from flts.events import IDENTIFIER_SCHEMA
from flts.exceptions import DataValidationError, FLTSError, ModelUnavailableError, RequestError

INFER = "/v2/models/{name}/infer"
INFER_PATTERN = re.compile(r"/v2/models/(?P<name>[^/]+)/infer")
PREFIX = "/v2"
PROBES = ("/v2/health/live", "/v2/health/ready")
WINDOW = "window"
END_TIME = "end_time"
FORECAST = "forecast"
TIME = "time"
FLOATS = ("FP32", "FP64")
#: Request parameters, passed on to the native form (which validates their values).
PARAMETERS = ("horizon", "intervals", "columns")
_JSON = "application/json"
#: The documented path parameter of the infer route (its documentation endpoint takes none).
NAME_PARAMETER = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The model: an identifier (`global`, a station).",
    "schema": dict(IDENTIFIER_SCHEMA),
}


# ----------------------------------------------------------------------------- request


class _Tensor(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    shape: list[int]
    datatype: str
    data: msgspec.Raw
    parameters: dict[str, Any] | None = None


class _Requested(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    parameters: dict[str, Any] | None = None


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[_Tensor]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_Requested] | None = None


_REQUEST = msgspec.json.Decoder(_Request)
_NUMBERS = msgspec.json.Decoder(list[float])
_TEXTS = msgspec.json.Decoder(list[str])


def error(exc: FLTSError) -> Response:
    """A refusal as v2 clients read it: ``{"error": "..."}``, within the problem document."""
    return problem_response(
        exc.http_status, exc.problems, exc.headers(), extensions=lambda detail: {"error": detail}
    )


def _refuse(message: str) -> RequestError:
    return RequestError(f"not an Open Inference Protocol v2 request: {message}")


def _request(body: bytes) -> _Request:
    try:
        return _REQUEST.decode(body)
    except msgspec.ValidationError as exc:
        raise _refuse(validation_problem(exc)) from exc
    except msgspec.DecodeError as exc:
        raise _refuse(f"malformed JSON: {exc}") from exc


def _binary_refused(parameters: dict[str, Any] | None, key: str, where: str) -> None:
    if parameters and parameters.get(key):
        raise _refuse(
            f"{where} asks for the binary tensor data extension ({key}), which this server "
            "does not speak: send tensors as JSON (binary_data=False in tritonclient)"
        )


def _flat(raw: msgspec.Raw, decoder: msgspec.json.Decoder[list[Any]], leaf: type) -> list[Any]:
    """A tensor's ``data``, flat (row-major) or nested, as one flat list of ``leaf``."""
    try:
        flat: list[Any] = decoder.decode(raw)
        return flat
    except msgspec.ValidationError:
        pass
    out: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, leaf) and not isinstance(node, bool):
            out.append(node)
        elif leaf is float and type(node) is int:
            out.append(float(node))
        else:
            raise _refuse(f"data holds {orjson.dumps(node).decode()[:40]}, not a {leaf.__name__}")

    walk(orjson.loads(bytes(raw)))
    return out


def _window(tensor: _Tensor) -> tuple[list[list[list[float]]], bool]:
    """The windows of the ``window`` input ``[batch, rows, features]``, and whether the
    request sent one window without its batch dimension."""
    where = f"input {WINDOW!r}"
    if tensor.datatype not in FLOATS:
        raise _refuse(f"{where} has datatype {tensor.datatype!r}; it takes FP64 or FP32")
    shape = tensor.shape
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise _refuse(
            f"{where} has shape {shape}; it takes [rows, features] or [batch, rows, features]"
        )
    values = _flat(tensor.data, _NUMBERS, float)
    if len(values) != math.prod(shape):
        raise _refuse(f"{where} holds {len(values)} values; shape {shape} needs {math.prod(shape)}")
    batch, rows, width = shape if len(shape) == 3 else (1, *shape)
    windows = [
        [values[(b * rows + r) * width : (b * rows + r + 1) * width] for r in range(rows)]
        for b in range(batch)
    ]
    return windows, len(shape) == 2


def _end_times(tensor: _Tensor, batch: int) -> list[str]:
    where = f"input {END_TIME!r}"
    if tensor.datatype != "BYTES":
        raise _refuse(f"{where} has datatype {tensor.datatype!r}; it takes BYTES (ISO 8601 text)")
    times = _flat(tensor.data, _TEXTS, str)
    if len(times) != math.prod(tensor.shape) or len(times) != batch:
        raise _refuse(
            f"{where} holds {len(times)} times with shape {tensor.shape}; it takes one per "
            f"window ({batch}): the time of the window's last row"
        )
    return times


async def infer(service: ForecastService, name: str, body: bytes, served: Served) -> bytes:
    """``POST /v2/models/{name}/infer``: the request as the native tensor form, answered by
    the service, the answer as v2 outputs (see the module doc)."""
    request = _request(body)
    _binary_refused(request.parameters, "binary_data_output", "the request")
    tensors: dict[str, _Tensor] = {}
    for tensor in request.inputs:
        _binary_refused(tensor.parameters, "binary_data_size", f"input {tensor.name!r}")
        if tensor.name not in (WINDOW, END_TIME):
            raise _refuse(
                f"unknown input {tensor.name!r}: the inputs are {WINDOW!r} and {END_TIME!r}"
            )
        if tensor.name in tensors:
            raise _refuse(f"input {tensor.name!r} is given twice")
        tensors[tensor.name] = tensor
    missing = [n for n in (WINDOW, END_TIME) if n not in tensors]
    if missing:
        raise _refuse(
            f"missing input(s) {missing}: {WINDOW!r} (the values) and {END_TIME!r} (the time "
            "of each window's last row) are required"
        )
    parameters = dict(request.parameters or {})
    parameters.pop("binary_data_output", None)
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise _refuse(f"unknown parameter(s) {unknown}; the parameters are {list(PARAMETERS)}")
    wanted = []
    for output in request.outputs or ():
        _binary_refused(output.parameters, "binary_data", f"output {output.name!r}")
        wanted.append(output.name)
    windows, single = _window(tensors[WINDOW])
    end_times = _end_times(tensors[END_TIME], len(windows))
    loaded = await service.serving(name)
    columns = parameters.pop("columns", None)
    if columns is None:  # the champion's own order (the metadata's parameters.columns)
        columns = list(loaded.spec.inputs)
    native = {"identifier": name, "columns": columns, "end_times": end_times, "windows": windows}
    native.update(parameters)  # horizon, intervals: validated by the native form
    try:
        body = orjson.dumps(native)
    except orjson.JSONEncodeError as exc:  # an integer past 64 bits, which JSON allows
        raise DataValidationError(f"parameters: {exc}") from exc
    answer = orjson.loads(await service.forecast_batch(body, served))
    return orjson.dumps(_response(name, request.id, answer, single, wanted))


def _response(
    name: str, request_id: str | None, answer: dict[str, Any], single: bool, wanted: list[str]
) -> dict[str, Any]:
    """The v2 answer of a native tensor answer."""
    forecast: list[list[list[float]]] = answer["forecast"]
    times: list[list[str]] = answer["times"]
    targets: list[str] = answer["targets"]
    batch, horizon = len(forecast), len(times[0])
    shape = [horizon, len(targets)] if single else [batch, horizon, len(targets)]

    def tensor(tensor_name: str, values: list[list[list[float]]]) -> dict[str, Any]:
        data = [value for window in values for step in window for value in step]
        return {
            "name": tensor_name,
            "datatype": "FP64",
            "shape": shape,
            "data": data,
            "parameters": {"targets": targets},
        }

    outputs = [
        tensor(FORECAST, forecast),
        {
            "name": TIME,
            "datatype": "BYTES",
            "shape": shape[:-1],
            "data": [t for window in times for t in window],
        },
    ]
    for key, band in answer.get("intervals", {}).items():
        outputs.append(tensor(f"{FORECAST}_lower_{key}", band["lower"]))
        outputs.append(tensor(f"{FORECAST}_upper_{key}", band["upper"]))
    if wanted:
        available = {output["name"]: output for output in outputs}
        unknown = [n for n in wanted if n not in available]
        if unknown:
            raise _refuse(
                f"unknown output(s) {unknown}; this request has {sorted(available)} "
                "(interval outputs need the parameter intervals)"
            )
        outputs = [available[n] for n in wanted]
    model = answer["model"]
    document: dict[str, Any] = {
        "model_name": name,
        "model_version": model["run_id"],
        "parameters": model,
        "outputs": outputs,
    }
    if request_id is not None:
        document["id"] = request_id
    return document


# ----------------------------------------------------------------------------- metadata


def metadata(name: str, loaded: LoadedModel) -> dict[str, Any]:
    """Model metadata: the tensors and the champion's feature spec."""
    spec = loaded.spec
    inputs, targets = list(spec.inputs), list(spec.targets)
    return {
        "name": name,
        "versions": [loaded.promotion.run_id],
        "platform": f"flts-{loaded.promotion.model_type.lower()}",
        "inputs": [
            {"name": WINDOW, "datatype": "FP64", "shape": [-1, spec.lags, len(inputs)]},
            {"name": END_TIME, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": FORECAST, "datatype": "FP64", "shape": [-1, spec.horizon, len(targets)]},
            {"name": TIME, "datatype": "BYTES", "shape": [-1, spec.horizon]},
        ],
        "parameters": {
            "columns": inputs,
            "targets": targets,
            "time_column": spec.time_column,
            "lags": spec.lags,
            "horizon": spec.horizon,
            "model": loaded.info,
            "feature_spec": spec.model_dump(mode="json"),
        },
    }


def _json(document: Any) -> Response:
    return Response(orjson.dumps(document), media_type=_JSON)


# ----------------------------------------------------------------------------- registration


def register(framework: FastAPI, app: InferenceApp) -> None:
    """Serve the v2 protocol on ``app`` (see the module doc)."""
    service = app.service
    holder = service.holder

    def bind(scope: Scope) -> Answer:
        return partial(infer, service, scope.get("path_params", {}).get("name", ""))

    route = ForecastRoute.scoped(INFER, bind, service.max_batch_bytes, render=error)
    app.add_route(INFER_PATTERN, route)
    for probe in PROBES:
        app.add_probe(probe)
    app.add_error_style(lambda path: path == PREFIX or path.startswith(PREFIX + "/"), error)

    router = APIRouter(tags=["Open Inference Protocol v2"])
    poll = service.settings.pointer_poll_seconds

    @router.get("/v2/health/live", summary="v2 liveness: the process answers")
    async def live() -> Response:
        return _json({"live": True})

    @router.get(
        "/v2/health/ready",
        summary="v2 readiness: a champion is loaded and warmed up",
        responses=error_responses(V2Error, 503),
    )
    async def ready() -> Response:
        if holder.snapshot():
            return _json({"ready": True})
        return error(ModelUnavailableError("no model is loaded yet", retry_after=poll))

    @router.get("/v2", summary="v2 server metadata", responses=error_responses(V2Error, 401, 403))
    async def server() -> Response:
        return _json({"name": "flts", "version": flts.__version__, "extensions": []})

    @router.get(
        "/v2/models/{name}",
        summary="v2 model metadata: tensors and the champion's feature spec",
        response_model=ModelMetadata,
        responses=error_responses(V2Error, 401, 403, 404, 421, 503),
    )
    async def model_metadata(name: str) -> Response:
        try:
            loaded = await service.serving(name)
        except FLTSError as exc:
            return error(exc)
        return _json(metadata(name, loaded))

    @router.get(
        "/v2/models/{name}/ready",
        summary="v2 model readiness",
        responses=error_responses(V2Error, 401, 403, 404, 421, 503),
    )
    async def model_ready(name: str) -> Response:
        try:
            await service.serving(name)
        except FLTSError as exc:
            return error(exc)
        return _json({"name": name, "ready": True})

    framework.include_router(router)
    framework.add_api_route(
        INFER,
        documentation_only,
        methods=["POST"],
        response_model=InferResponse,
        openapi_extra={**body_schema(InferRequest), "parameters": [NAME_PARAMETER]},
        responses=error_responses(V2Error, 400, 401, 403, 404, 413, 421, 422, 429, 503, 504),
        summary="v2 inference: forecasts of one or more windows",
        tags=["Open Inference Protocol v2"],
    )
    answered_by(framework, INFER, route)
