"""The one ASGI entry of an inference replica: :class:`InferenceApp`.

::

    uvicorn ─► InferenceApp ─► middleware stack (plain ASGI, applied once, around everything)
                                 MetricsMiddleware          every request counted and timed
                                 AuthMiddleware             API keys, scope "forecast"
                               ─► dispatch
                                    POST /v1/forecast        ─► ForecastRoute ─► ForecastService
                                    POST /v1/forecast/batch  ─► ForecastRoute ─► ForecastService
                                    anything else            ─► FastAPI (other routes, /docs,
                                                                 OpenAPI, 404/405, lifespan)

The two forecast routes are matched with one dictionary lookup and answered by
:class:`ForecastRoute` directly: FastAPI's per-request machinery (routing, ``Request``
objects, dependency solving, its own middlewares) costs more CPU than a forecast. FastAPI
still documents both routes, and its own routes for them are the same :class:`ForecastRoute`
objects, so a forecast is answered identically whichever way it arrives.

Cross-cutting layers belong in :func:`middleware_stack`, never inside FastAPI (where they would
miss the forecast routes): authentication (:mod:`flts.security.guard`) sits right inside the
metrics layer, so refused requests are counted too, and lets ``/healthz`` and ``/readyz``
through (docs/architecture.md, rule 15); every other path, the forecast routes included,
needs a key with the ``forecast`` scope. CORS, if ever needed, goes between metrics and auth
(a preflight carries no credentials).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from flts.api.errors import error_response
from flts.api.holder import ModelHolder
from flts.api.metrics import MODEL_TYPE_SCOPE_KEY, ROUTE_SCOPE_KEY, ApiMetrics, MetricsMiddleware
from flts.api.service import ForecastService, Served
from flts.api.watcher import ChampionWatcher
from flts.exceptions import FLTSError, PayloadTooLargeError
from flts.security.guard import key_ring, protect
from flts.settings import SecuritySettings

FORECAST = "/v1/forecast"
FORECAST_BATCH = "/v1/forecast/batch"
_JSON = (b"content-type", b"application/json")

Answer = Callable[[bytes, Served], Awaitable[bytes]]


class ForecastRoute:
    """One forecast route as a plain ASGI app: body (bounded), service call, answer bytes."""

    def __init__(self, path: str, answer: Answer, max_body_bytes: int) -> None:
        self.path = path
        self.answer = answer
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_SCOPE_KEY] = self.path
        served = Served()
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            if body is None:
                return  # the client went away
            payload = await self.answer(body, served)
        except FLTSError as exc:
            scope[MODEL_TYPE_SCOPE_KEY] = served.model_type
            await error_response(exc)(scope, receive, send)
            return
        scope[MODEL_TYPE_SCOPE_KEY] = served.model_type
        headers = [(b"content-length", str(len(payload)).encode()), _JSON]
        if served.model is not None:  # lineage of the one model that answered
            headers += served.model.raw_headers
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes | None:
    """The whole body, refused with 413 as soon as it is (or claims to be) over ``limit``
    bytes; ``None`` when the client disconnects first."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise PayloadTooLargeError(
                    f"request body of {value.decode()} bytes is over the {limit}-byte limit"
                )
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def middleware_stack(app: ASGIApp, metrics: ApiMetrics, security: SecuritySettings) -> ASGIApp:
    """The cross-cutting layers around every route, outermost first (see module doc)."""
    keys = key_ring(security, "inference API")
    guarded = protect(app, security, keys=keys, default="forecast", render=error_response)
    return MetricsMiddleware(guarded, metrics)


class InferenceApp:
    """One inference replica as an ASGI app (see module doc); what ``create_app`` returns and
    uvicorn runs. Its parts stay reachable for embedders and tests."""

    def __init__(
        self,
        *,
        service: ForecastService,
        framework: FastAPI,
        metrics: ApiMetrics,
        watcher: ChampionWatcher,
        replica_id: str,
        security: SecuritySettings | None = None,
    ) -> None:
        self.service = service
        self.framework = framework
        self.metrics = metrics
        self.watcher = watcher
        self.replica_id = replica_id
        self.routes = {
            FORECAST: ForecastRoute(FORECAST, service.forecast, service.max_body_bytes),
            FORECAST_BATCH: ForecastRoute(
                FORECAST_BATCH, service.forecast_batch, service.max_batch_bytes
            ),
        }
        self._stack = middleware_stack(self._dispatch, metrics, security or SecuritySettings())

    @property
    def holder(self) -> ModelHolder:
        return self.service.holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._stack(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                await route(scope, receive, send)
                return
        await self.framework(scope, receive, send)
