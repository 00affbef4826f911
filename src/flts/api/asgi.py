"""The one ASGI entry of an inference replica: :class:`InferenceApp`.

::

    uvicorn ─► InferenceApp ─► middleware stack (plain ASGI, applied once, around everything)
                                 MetricsMiddleware          every request counted and timed
                                 AuthMiddleware             API keys, scope "forecast"
                               ─► dispatch
                                    POST /v1/forecast        ─► ForecastRoute ─► ForecastService
                                    POST /v1/forecast/batch  ─► ForecastRoute ─► ForecastService
                                    POST /v2/models/{name}/infer, POST /invocations
                                                             ─► protocol routes (flts.api.protocols)
                                                                 ─► ForecastService
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

Standard serving protocols (:mod:`flts.api.protocols`) plug in through
:meth:`InferenceApp.add_route` (their POST routes on the same fast path, exact or by pattern),
:meth:`InferenceApp.add_probe` (open probe paths) and :meth:`InferenceApp.add_error_style` (the
error body their clients parse, for their paths, refusals of the auth layer included).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from flts.api.errors import error_response
from flts.api.holder import ModelHolder
from flts.api.metrics import MODEL_TYPE_SCOPE_KEY, ROUTE_SCOPE_KEY, ApiMetrics, MetricsMiddleware
from flts.api.service import ForecastService, Served
from flts.api.watcher import ChampionWatcher
from flts.exceptions import FLTSError, PayloadTooLargeError
from flts.security.guard import OPEN, AuthMiddleware, Render, key_ring, protect
from flts.settings import SecuritySettings

FORECAST = "/v1/forecast"
FORECAST_BATCH = "/v1/forecast/batch"
_JSON = (b"content-type", b"application/json")

Answer = Callable[[bytes, Served], Awaitable[bytes]]


async def _unbound(body: bytes, served: Served) -> bytes:
    raise AssertionError("a scoped route answers through its bind")


class ForecastRoute:
    """One forecast route as a plain ASGI app: body (bounded), service call, answer bytes.

    ``path`` is the route's template (its metrics label); ``render`` turns a refusal into the
    response its clients expect (the problem document by default)."""

    def __init__(
        self, path: str, answer: Answer, max_body_bytes: int, render: Render = error_response
    ) -> None:
        self.path = path
        self.answer = answer
        self.max_body_bytes = max_body_bytes
        self.render = render
        self.bind: Callable[[Scope], Answer] | None = None

    @classmethod
    def scoped(
        cls,
        path: str,
        bind: Callable[[Scope], Answer],
        max_body_bytes: int,
        render: Render = error_response,
    ) -> ForecastRoute:
        """A route whose answer depends on the request (its path parameters, its content
        type): ``bind(scope)`` gives the answer of each request."""
        route = cls(path, _unbound, max_body_bytes, render)
        route.bind = bind
        return route

    def answer_for(self, scope: Scope) -> Answer:
        return self.answer if self.bind is None else self.bind(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE_SCOPE_KEY] = self.path
        served = Served()
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
            if body is None:
                return  # the client went away
            answer = self.answer if self.bind is None else self.bind(scope)
            payload = await answer(body, served)
        except FLTSError as exc:
            scope[MODEL_TYPE_SCOPE_KEY] = served.model_type
            await self.render(exc)(scope, receive, send)
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


def middleware_stack(
    app: ASGIApp, metrics: ApiMetrics, security: SecuritySettings, render: Render = error_response
) -> tuple[ASGIApp, AuthMiddleware]:
    """The cross-cutting layers around every route, outermost first (see module doc), and the
    auth layer among them (whose policy protocols add their probes to)."""
    keys = key_ring(security, "inference API")
    guarded = protect(app, security, keys=keys, default="forecast", render=render)
    return MetricsMiddleware(guarded.dispatch, metrics), guarded


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
        self._patterns: list[tuple[re.Pattern[str], ForecastRoute]] = []
        self._error_styles: list[tuple[Callable[[str], bool], Render]] = []
        self._stack, self._auth = middleware_stack(
            self._dispatch, metrics, security or SecuritySettings(), self._render_error
        )

    def add_route(self, path: str | re.Pattern[str], route: ForecastRoute) -> None:
        """Answer ``POST path`` with ``route`` on the fast path (beside the forecast routes).
        A pattern is matched whole against paths no exact route takes; its named groups are
        the request's ``path_params``, as FastAPI's router would set them."""
        if isinstance(path, str):
            self.routes[path] = route
        else:
            self._patterns.append((path, route))

    def add_probe(self, path: str) -> None:
        """Let ``GET path`` through without a key, like ``/healthz`` (a probe reveals nothing
        and orchestrators send no credentials: docs/architecture.md, rule 15)."""
        self._auth.policy.exact[path] = OPEN

    def guards(self, path: str) -> bool:
        """Whether the auth layer asks a key on ``path`` (an OpenAPI path template): what
        documents 401 and 403 for its operations."""
        return self._auth.policy.required(path) != OPEN

    def add_error_style(self, matches: Callable[[str], bool], render: Render) -> None:
        """Refusals of paths ``matches`` accepts, the auth layer's included, are rendered by
        ``render`` (a protocol's clients parse their own error body); first match wins."""
        self._error_styles.append((matches, render))

    def render_error(self, path: str, exc: FLTSError) -> ASGIApp:
        """The response to ``exc`` on ``path``: the problem document unless a protocol
        claims the path."""
        for matches, render in self._error_styles:
            if matches(path):
                return render(exc)
        return error_response(exc)

    def _render_error(self, exc: FLTSError) -> ASGIApp:
        async def respond(scope: Scope, receive: Receive, send: Send) -> None:
            await self.render_error(scope["path"], exc)(scope, receive, send)

        return respond

    @property
    def holder(self) -> ModelHolder:
        return self.service.holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, unlike the layers inside: uvicorn tells ASGI 3 apps from
        # ASGI 2 ones by that.
        await self._stack(scope, receive, send)

    def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The answer of the route that takes the request: a plain function returning that
        route's coroutine, so a forecast's frames (resumed at every await) are one fewer."""
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            route = self.routes.get(path)
            if route is None and self._patterns:
                for pattern, candidate in self._patterns:
                    match = pattern.fullmatch(path)
                    if match is not None:
                        scope["path_params"] = match.groupdict()
                        route = candidate
                        break
            if route is not None:
                return route(scope, receive, send)
        return self.framework(scope, receive, send)
