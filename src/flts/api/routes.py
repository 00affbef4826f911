"""HTTP routes of the inference API.

Forecast bodies are read here rather than by FastAPI's body parameter so that size is checked
*before* parsing (413 without buffering a huge body), malformed JSON gets its position in the
message, and parsing uses orjson (strict JSON: ``NaN``/``Infinity`` literals are malformed).

Overload and time limits (``serving.max_in_flight`` -> 429, ``serving.request_timeout`` -> 504)
apply to forecast routes; prediction runs in a worker thread so a slow model never stalls the
event loop that answers ``/healthz``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson
from fastapi import APIRouter, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from flts.api.errors import ApiError, describe_pydantic_errors, problem_response
from flts.api.fastpath import FastBatch, body_may_be_fast, fast_window_batch, fast_windows
from flts.api.forecasting import answer, forecast, model_info
from flts.api.holder import LoadedModel, ModelHolder
from flts.api.metrics import MODEL_TYPE_SCOPE_KEY, ApiMetrics
from flts.api.schemas import (
    BatchForecastRequest,
    BatchForecastResponse,
    ForecastRequest,
    ForecastResponse,
    WindowBatchRequest,
    WindowBatchResponse,
)
from flts.api.window_batch import (
    answer_window_batch,
    claimed_size,
    is_window_batch,
    validate_window_batch,
)
from flts.data.windows import Windows
from flts.events import Identifier
from flts.exceptions import DataValidationError, ModelError
from flts.settings import ServingSettings

T = TypeVar("T")

#: Most forecasts one batch call may carry (requests of the row form, windows of the tensor
#: form).
MAX_BATCH_REQUESTS = 1024
#: Largest fast-path batch answered on the event loop (1024 LSTM windows take ~2 ms).
_INLINE_MAX_WINDOWS = 1024
#: Generous JSON budget per history row (a row of 12 numbers is ~300 bytes), used to refuse
#: oversized bodies before reading them; the row count itself is then checked exactly.
_BYTES_PER_ROW = 1024
_BYTES_OVERHEAD = 64 * 1024
_JSON = "application/json"


class ForecastService:
    """Model resolution, limits and the forecast path, shared by the single and batch routes."""

    def __init__(self, holder: ModelHolder, settings: ServingSettings) -> None:
        self.holder = holder
        self.settings = settings
        self.max_body_bytes = settings.max_history_rows * _BYTES_PER_ROW + _BYTES_OVERHEAD
        self.max_batch_bytes = self.max_body_bytes * 4
        self._in_flight = 0  # only touched on the event loop: no lock needed

    # ------------------------------------------------------------------ models

    def resolve(self, identifier: str | None) -> LoadedModel:
        """The model for ``identifier``; when omitted, ``global`` or the only one loaded.

        An identifier without a champion is a 503 (its promotion may arrive any moment), not a
        silent fallback to another station's model.
        """
        retry = self.settings.pointer_poll_seconds
        if identifier is not None:
            loaded = self.holder.get(identifier)
            if loaded is None:
                raise ApiError.unavailable(
                    f"no model is loaded for identifier {identifier!r} yet: nothing promoted "
                    "for it, or its champion is still loading",
                    retry,
                )
            return loaded
        models = self.holder.snapshot()
        if "global" in models:
            return models["global"]
        if len(models) == 1:
            return next(iter(models.values()))
        if not models:
            raise ApiError.unavailable(
                "no model is loaded yet: nothing promoted, or the champion is still loading",
                retry,
            )
        raise ApiError.invalid(
            f"identifier is required: models are loaded for {sorted(models)} and none for 'global'"
        )

    # ------------------------------------------------------------------ bodies

    async def read_json(self, request: Request, limit: int) -> Any:
        return parse_json(await self.read_body(request, limit))

    async def read_body(self, request: Request, limit: int) -> bytes:
        """The raw body, refused with 413 as soon as it is over ``limit`` bytes."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(
                413, [f"request body of {declared} bytes is over the {limit}-byte limit"]
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, [f"request body is over the {limit}-byte limit"])
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def check_rows(self, document: Any, prefix: str = "") -> None:
        """413 for a history over ``max_history_rows`` (checked before full validation)."""
        history = document.get("history") if isinstance(document, dict) else None
        limit = self.settings.max_history_rows
        if isinstance(history, list) and len(history) > limit:
            raise ApiError(
                413,
                [f"{prefix}history has {len(history)} rows, over the limit of {limit} rows"],
            )

    # ------------------------------------------------------------------ fast path

    def fast_resolve(self, identifier: Any) -> LoadedModel | None:
        """:meth:`resolve` without errors: ``None`` sends the request to the reference path,
        which reports the 422/503 precisely."""
        models = self.holder.snapshot()
        if identifier is None:
            if "global" in models:
                return models["global"]
            return next(iter(models.values())) if len(models) == 1 else None
        return models.get(identifier) if type(identifier) is str else None

    def fast(self, documents: list[Any], body: bytes) -> tuple[LoadedModel, FastBatch] | None:
        """Windows of ``documents`` when every one is fast-path material for one model."""
        if not documents or not body_may_be_fast(body):
            return None
        loaded: LoadedModel | None = None
        for document in documents:
            if type(document) is not dict:
                return None
            model = self.fast_resolve(document.get("identifier"))
            if model is None or (loaded is not None and model is not loaded):
                return None
            loaded = model
        assert loaded is not None
        batch = fast_windows(documents, loaded.spec)
        return None if batch is None else (loaded, batch)

    def fast_window_batch(
        self, document: Any, body: bytes
    ) -> tuple[LoadedModel, Windows, int] | None:
        """Model, windows and horizon of an ordinary tensor batch body (``None``: the
        reference path decides)."""
        if type(document) is not dict:
            return None
        loaded = self.fast_resolve(document.get("identifier"))
        if loaded is None:
            return None
        limits = (MAX_BATCH_REQUESTS, self.settings.max_history_rows)
        fast = fast_window_batch(document, body, loaded.spec, *limits)
        return None if fast is None else (loaded, *fast)

    async def predict(self, loaded: LoadedModel, windows: int, work: Callable[[], T]) -> T:
        """``work`` (a forecast of ``windows`` windows with ``loaded``): on the event loop for
        bounded numpy/ONNX runtimes (a thread hop would cost more than the forecast), in a
        worker thread under the 429/504 limits otherwise."""
        if loaded.inline and windows <= _INLINE_MAX_WINDOWS:
            try:
                return work()
            except ModelError as exc:
                raise ApiError(500, [f"the model failed: {exc}"]) from exc
        return await self.run(work)

    async def answer_fast(self, loaded: LoadedModel, batch: FastBatch) -> list[dict[str, Any]]:
        """Answers of a fast-path batch (see :meth:`predict`)."""
        return await self.predict(
            loaded, len(batch.horizons), lambda: answer(loaded, batch.windows, batch.horizons)
        )

    # ------------------------------------------------------------------ execution

    async def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a worker thread under the in-flight and time limits."""
        if self._in_flight >= self.settings.max_in_flight:
            raise ApiError(
                429,
                [f"too many forecasts in progress (limit {self.settings.max_in_flight})"],
                headers={"Retry-After": "1"},
            )
        self._in_flight += 1
        try:
            with anyio.fail_after(self.settings.request_timeout):
                return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise ApiError(
                504, [f"forecast took longer than {self.settings.request_timeout:g} s"]
            ) from exc
        except ModelError as exc:
            raise ApiError(500, [f"the model failed: {exc}"]) from exc
        finally:
            self._in_flight -= 1


def parse_json(body: bytes) -> Any:
    """orjson's strict JSON (``NaN``/``Infinity`` literals are malformed), 422 with the
    position of the problem."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not body.strip():
            raise ApiError.invalid("malformed JSON: the request body is empty") from exc
        raise ApiError.invalid(f"malformed JSON: {exc}") from exc


def _validate(model: type[Any], document: Any, prefix: str = "") -> Any:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise ApiError(422, describe_pydantic_errors(exc.errors(), prefix)) from exc


def _json(document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), media_type=_JSON, headers=headers)


def _body_schema(*models: type[Any]) -> dict[str, Any]:
    """The documented request body: one model, or either of several (``oneOf``), with the
    nested models inlined (the bodies are read by hand, so FastAPI does not register them
    under ``components``)."""
    schemas = []
    for model in models:
        schema = model.model_json_schema()
        schemas.append(_inline(schema, schema.pop("$defs", {})))
    body = schemas[0] if len(schemas) == 1 else {"oneOf": schemas}
    return {"requestBody": {"required": True, "content": {_JSON: {"schema": body}}}}


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/Name"}`` replaced by that definition."""
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    if not isinstance(node, dict):
        return node
    reference = node.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
    return {key: _inline(value, definitions) for key, value in node.items()}


def build_router(service: ForecastService, metrics: ApiMetrics) -> APIRouter:
    router = APIRouter()
    holder = service.holder

    @router.post(
        "/v1/forecast",
        response_model=ForecastResponse,
        openapi_extra=_body_schema(ForecastRequest),
        summary="Forecast the next steps from recent history",
    )
    async def post_forecast(request: Request) -> Response:
        raw = await service.read_body(request, service.max_body_bytes)
        document = parse_json(raw)
        service.check_rows(document)
        fast = service.fast([document], raw)
        if fast is not None:
            loaded, batch = fast  # the reference this request keeps
            request.scope[MODEL_TYPE_SCOPE_KEY] = loaded.promotion.model_type
            [result] = await service.answer_fast(loaded, batch)
            return _json(result, loaded.headers)
        body: ForecastRequest = _validate(ForecastRequest, document)
        loaded = service.resolve(body.identifier)
        request.scope[MODEL_TYPE_SCOPE_KEY] = loaded.promotion.model_type
        result = await service.run(lambda: forecast(loaded, body))
        return _json(result, loaded.headers)

    async def post_window_batch(request: Request, raw: bytes, document: dict[str, Any]) -> Response:
        """The tensor form (:mod:`flts.api.window_batch`): one model answers every window."""
        count, rows = claimed_size(document)
        if count > MAX_BATCH_REQUESTS:
            raise ApiError(
                413, [f"{count} windows in one batch, over the limit of {MAX_BATCH_REQUESTS}"]
            )
        if rows > service.settings.max_history_rows:
            raise ApiError(
                413,
                [
                    f"a window has {rows} rows, over the limit of "
                    f"{service.settings.max_history_rows} rows"
                ],
            )
        fast = service.fast_window_batch(document, raw)
        if fast is not None:
            loaded, windows, horizon = fast
            request.scope[MODEL_TYPE_SCOPE_KEY] = loaded.promotion.model_type
            result = await service.predict(
                loaded, len(windows), lambda: answer_window_batch(loaded, windows, horizon)
            )
            return _json(result, loaded.headers)
        if "requests" in document:
            raise ApiError.invalid(
                "a batch is either `requests` (row form) or `windows` (tensor form), not both"
            )
        body: WindowBatchRequest = _validate(WindowBatchRequest, document)
        model = service.resolve(body.identifier)
        request.scope[MODEL_TYPE_SCOPE_KEY] = model.promotion.model_type

        def work() -> dict[str, Any]:
            # Row-by-row checks of up to 1,024 windows: off the event loop, like the row form.
            try:
                checked = validate_window_batch(body, model.spec)
            except DataValidationError as exc:
                raise ApiError.from_validation(exc) from exc
            return answer_window_batch(model, checked, body.horizon)

        return _json(await service.run(work), model.headers)

    @router.post(
        "/v1/forecast/batch",
        response_model=BatchForecastResponse | WindowBatchResponse,
        openapi_extra=_body_schema(BatchForecastRequest, WindowBatchRequest),
        summary="Several forecasts in one call (all succeed or the call fails)",
        description=(
            "Row form: `requests`, one forecast request per item (answered as `results`). "
            "Tensor form: `columns`, `end_times` and `windows[i][row][column]` (or the same "
            "array as base64 bytes in `encoded_windows`) of one identifier, answered as "
            "`times` and `forecast[i][step][target]`: for clients that hold their windows as "
            "arrays, and the fastest way to send many windows."
        ),
    )
    async def post_forecast_batch(request: Request) -> Response:
        raw = await service.read_body(request, service.max_batch_bytes)
        document = parse_json(raw)
        if is_window_batch(document):
            return await post_window_batch(request, raw, document)
        items = document.get("requests") if isinstance(document, dict) else None
        if isinstance(items, list):
            if len(items) > MAX_BATCH_REQUESTS:
                raise ApiError(
                    413,
                    [f"{len(items)} requests in one batch, over the limit of {MAX_BATCH_REQUESTS}"],
                )
            for index, item in enumerate(items):
                service.check_rows(item, f"requests[{index}].")
            if type(document) is dict and document.keys() == {"requests"}:
                fast = service.fast(items, raw)
                if fast is not None:
                    model, batch = fast
                    request.scope[MODEL_TYPE_SCOPE_KEY] = model.promotion.model_type
                    return _json({"results": await service.answer_fast(model, batch)})
        body: BatchForecastRequest = _validate(BatchForecastRequest, document)
        loaded = [service.resolve(item.identifier) for item in body.requests]
        request.scope[MODEL_TYPE_SCOPE_KEY] = ",".join(
            sorted({m.promotion.model_type for m in loaded})
        )

        def work() -> list[dict[str, Any]]:
            results: list[dict[str, Any]] = []
            problems: list[str] = []
            for index, (item, model) in enumerate(zip(body.requests, loaded, strict=True)):
                try:
                    results.append(forecast(model, item, prefix=f"requests[{index}]: "))
                except ApiError as exc:
                    problems.extend(exc.problems)
            if problems:
                raise ApiError.invalid(*problems)
            return results

        return _json({"results": await service.run(work)})

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> Response:
        return _json({"status": "alive"})

    @router.get("/readyz", summary="Readiness: a champion is loaded and warmed up")
    async def readyz() -> Response:
        models = holder.snapshot()
        if not models:
            return problem_response(
                503,
                ["no model is loaded yet"],
                {"Retry-After": str(max(1, round(service.settings.pointer_poll_seconds)))},
            )
        return _json(
            {"status": "ready", "models": {k: v.promotion.run_id for k, v in models.items()}}
        )

    @router.get("/v1/models/champion", summary="The champion serving an identifier")
    async def champion(identifier: Identifier | None = Query(default=None)) -> Response:  # noqa: B008
        return _json(_describe(service.resolve(identifier)))

    @router.get("/v1/models", summary="Every model this replica serves")
    async def models() -> Response:
        return _json({"models": [_describe(m) for m in holder.snapshot().values()]})

    @router.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


def _describe(loaded: LoadedModel) -> dict[str, Any]:
    promotion = loaded.promotion
    return {
        **model_info(loaded),
        "previous_run_id": promotion.previous_run_id,
        "scores": promotion.scores,
        "action": promotion.action,
        "loaded_at": loaded.loaded_at.isoformat(),
        "load_seconds": round(loaded.load_seconds, 3),
        "feature_spec": loaded.spec.model_dump(mode="json"),
    }
