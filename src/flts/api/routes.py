"""The FastAPI side of the inference API: probes, model descriptions, metrics, and the OpenAPI
documentation of the two forecast routes.

The forecast routes are answered by :class:`~flts.api.asgi.ForecastRoute` (see
:mod:`flts.api.asgi`); :func:`document_forecast_routes` declares them here so ``/docs`` shows
their bodies (the pydantic models of :mod:`flts.api.schemas`) and other methods get a 405,
and makes those same :class:`~flts.api.asgi.ForecastRoute` objects their ASGI apps.

Every route declares the refusals it can answer (:func:`~flts.api.errors.problem_responses`);
401 and 403 are added to every guarded operation by :func:`~flts.api.errors.document_contract`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Query
from fastapi.routing import APIRoute
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp

from flts.api.errors import problem_response, problem_responses
from flts.api.holder import LoadedModel
from flts.api.metrics import ApiMetrics
from flts.api.schemas import (
    BatchForecastRequest,
    BatchForecastResponse,
    ForecastRequest,
    ForecastResponse,
    WindowBatchRequest,
    WindowBatchResponse,
)
from flts.api.service import ForecastService
from flts.events import Identifier

_JSON = "application/json"
#: What a forecast route can refuse (docs/architecture.md, rule 8): too large, bad input,
#: overloaded, no model yet (for that identifier), timed out.
FORECAST_REFUSALS = (413, 421, 422, 429, 503, 504)


def _json(document: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(document), media_type=_JSON, headers=headers)


def body_schema(*models: type[Any]) -> dict[str, Any]:
    """The documented request body: one model, or either of several (``oneOf``), with the
    nested models inlined (the bodies are decoded by :mod:`flts.api.forms`, so FastAPI does
    not register them under ``components``)."""
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


async def documentation_only() -> None:
    """Never called: the route's ASGI app is replaced by its ForecastRoute."""


def document_forecast_routes(app: FastAPI, routes: Mapping[str, ASGIApp]) -> None:
    """Declare ``POST /v1/forecast`` and ``POST /v1/forecast/batch`` in ``app`` (OpenAPI,
    405 for other methods), answered by ``routes[path]``."""
    app.add_api_route(
        "/v1/forecast",
        documentation_only,
        methods=["POST"],
        response_model=ForecastResponse,
        responses=problem_responses(*FORECAST_REFUSALS),
        openapi_extra=body_schema(ForecastRequest),
        summary="Forecast the next steps from recent history",
    )
    app.add_api_route(
        "/v1/forecast/batch",
        documentation_only,
        methods=["POST"],
        response_model=BatchForecastResponse | WindowBatchResponse,
        responses=problem_responses(*FORECAST_REFUSALS),
        openapi_extra=body_schema(BatchForecastRequest, WindowBatchRequest),
        summary="Several forecasts in one call (all succeed or the call fails)",
        description=(
            "Row form: `requests`, one forecast request per item (answered as `results`). "
            "Tensor form: `columns`, `end_times` and `windows[i][row][column]` (or the same "
            "array as base64 bytes in `encoded_windows`) of one identifier, answered as "
            "`times` and `forecast[i][step][target]`: for clients that hold their windows as "
            "arrays, and the fastest way to send many windows."
        ),
    )
    for route in app.router.routes:
        if isinstance(route, APIRoute) and route.path in routes:
            route.app = routes[route.path]


def build_router(service: ForecastService, metrics: ApiMetrics) -> APIRouter:
    router = APIRouter()
    holder = service.holder

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> Response:
        return _json({"status": "alive"})

    @router.get(
        "/readyz",
        summary="Readiness: a champion is loaded and warmed up",
        responses=problem_responses(421, 503),
    )
    async def readyz() -> Response:
        models = holder.snapshot()
        if not models:
            return problem_response(
                503,
                ["no model is loaded yet"],
                {"Retry-After": str(max(1, round(service.settings.pointer_poll_seconds)))},
            )
        # Ready, possibly degraded: a fallback model answers while the champion cannot be
        # loaded (docs/architecture.md, rule 12); taking the replica out would help nobody.
        degraded = {k: v.degraded.describe(v.promotion) for k, v in models.items() if v.degraded}
        return _json(
            {
                "status": "degraded" if degraded else "ready",
                "models": {k: v.promotion.run_id for k, v in models.items()},
                "degraded": degraded,
            }
        )

    @router.get(
        "/v1/models/champion",
        summary="The champion serving an identifier",
        responses=problem_responses(422, 503),
    )
    async def champion(identifier: Identifier | None = Query(default=None)) -> Response:  # noqa: B008
        return _json(_describe(service.resolve(identifier)))

    @router.get("/v1/models", summary="Every model this replica serves")
    async def models() -> Response:
        return _json({"models": [_describe(m) for m in holder.snapshot().values()]})

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format)",
        response_class=PlainTextResponse,
    )
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router


def _describe(loaded: LoadedModel) -> dict[str, Any]:
    promotion = loaded.promotion
    return {
        **loaded.info,
        "previous_run_id": promotion.previous_run_id,
        "scores": promotion.scores,
        "action": promotion.action,
        "loaded_at": loaded.loaded_at.isoformat(),
        "load_seconds": round(loaded.load_seconds, 3),
        "feature_spec": loaded.spec.model_dump(mode="json"),
    }
