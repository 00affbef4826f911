"""The lean forecast path: a pure ASGI layer in front of FastAPI for the two hot routes.

FastAPI's per-request machinery (routing, ``Request`` objects, dependency solving, the
exception middlewares, the metrics middleware's closure) costs several times more CPU than a
forecast (ONNX ~20-130 us, fast validation ~70 us). :class:`ForecastFront` answers exactly
``POST /v1/forecast`` and ``POST /v1/forecast/batch`` itself when the request is ordinary:
body read straight from ``receive``, orjson, the existing fast validation
(:mod:`flts.api.fastpath`), one model call, orjson out, and pre-bound metric children.

It *never* produces an error of its own. Whenever anything is unusual (a body over the size
limit, malformed JSON, too many rows, anything the fast validation defers, a model that runs
in a worker thread, an exception while answering) it hands the request, with the body it
already read replayed, to the FastAPI app behind it, whose routes produce the reference
status codes and messages. Both paths therefore answer identically by construction; the
front only decides who answers.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flts.api.forecasting import answer
from flts.api.holder import LoadedModel
from flts.api.metrics import ApiMetrics
from flts.api.routes import _INLINE_MAX_WINDOWS, MAX_BATCH_REQUESTS, ForecastService
from flts.api.window_batch import answer_window_batch, is_window_batch

#: Scope key set once a front handed a request on, so a second front behind it (the
#: middleware inside the FastAPI app, when :func:`served` wraps it) does not try again.
_HANDED_ON = "flts.front.handed_on"

SINGLE = "/v1/forecast"
BATCH = "/v1/forecast/batch"
_CONTENT_TYPE = (b"content-type", b"application/json")


class ForecastFront:
    """Pure ASGI middleware: the fast answer for ordinary forecast requests, the FastAPI app
    (``app``) for everything else (see module doc)."""

    def __init__(self, app: ASGIApp, service: ForecastService, metrics: ApiMetrics) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics
        # (route, model_type) -> (requests counter child, latency histogram child)
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
            or _HANDED_ON in scope
        ):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == SINGLE:
            limit = self.service.max_body_bytes
        elif path == BATCH:
            limit = self.service.max_batch_bytes
        else:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        gauge = self.metrics.in_flight
        gauge.inc()
        handled = False
        try:
            pending: list[Message] = []
            body = await _read_body(receive, limit, pending)
            if body is not None:
                handled = await self._answer(path, body, send, started)
        finally:
            gauge.dec()
        if not handled:
            scope[_HANDED_ON] = True
            await self.app(scope, _replay(pending, receive), send)

    async def _answer(self, path: str, body: bytes, send: Send, started: float) -> bool:
        """Answer on the fast path; ``False`` (nothing sent) hands the request on."""
        service = self.service
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if path == SINGLE:
            if not _rows_ok(document, service.settings.max_history_rows):
                return False
            documents = [document]
        elif is_window_batch(document):
            return await self._answer_window_batch(document, body, send, started)
        else:
            if type(document) is not dict or document.keys() != {"requests"}:
                return False
            items = document["requests"]
            if type(items) is not list or len(items) > MAX_BATCH_REQUESTS:
                return False
            limit = service.settings.max_history_rows
            if not all(_rows_ok(item, limit) for item in items):
                return False
            documents = items
        fast = service.fast(documents, body)
        if fast is None:
            return False
        loaded, batch = fast
        if not loaded.inline or len(batch.horizons) > _INLINE_MAX_WINDOWS:
            return False  # worker thread under the 429/504 limits: the FastAPI route's job
        try:
            answers = answer(loaded, batch.windows, batch.horizons)
            payload = orjson.dumps(answers[0] if path == SINGLE else {"results": answers})
        except Exception:  # the reference route reports it (500) with its own message
            return False
        # The row-form batch names no single model (items may use different identifiers).
        await self._send(path, loaded, payload, send, started, named=path == SINGLE)
        return True

    async def _answer_window_batch(
        self, document: dict[str, Any], body: bytes, send: Send, started: float
    ) -> bool:
        """The tensor batch form (:mod:`flts.api.window_batch`), as :meth:`_answer`."""
        fast = self.service.fast_window_batch(document, body)
        if fast is None:
            return False
        loaded, windows, horizon = fast
        if not loaded.inline or len(windows) > _INLINE_MAX_WINDOWS:
            return False
        try:
            payload = orjson.dumps(answer_window_batch(loaded, windows, horizon))
        except Exception:  # the reference route reports it (500) with its own message
            return False
        await self._send(BATCH, loaded, payload, send, started, named=True)
        return True

    async def _send(
        self,
        path: str,
        loaded: LoadedModel,
        payload: bytes,
        send: Send,
        started: float,
        *,
        named: bool,
    ) -> None:
        headers = [(b"content-length", str(len(payload)).encode()), _CONTENT_TYPE]
        if named:  # lineage headers of the one model that answered
            headers += loaded.raw_headers
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        counter, latency = self._bound(path, loaded.promotion.model_type)
        counter.inc()
        latency.observe(time.perf_counter() - started)

    def _bound(self, route: str, model_type: str) -> tuple[Any, Any]:
        """Metric children with their labels resolved once, not per request."""
        key = (route, model_type)
        children = self._children.get(key)
        if children is None:
            labels = (route, "POST", "200", model_type)
            children = (
                self.metrics.requests.labels(*labels),
                self.metrics.latency.labels(*labels),
            )
            self._children[key] = children
        return children


def _rows_ok(document: Any, limit: int) -> bool:
    """Within the history-row limit (the route answers 413 otherwise)."""
    history = document.get("history") if type(document) is dict else None
    return not (type(history) is list and len(history) > limit)


async def _read_body(receive: Receive, limit: int, pending: list[Message]) -> bytes | None:
    """The whole body, or ``None`` when it is over ``limit`` or the client went away; every
    message read is kept in ``pending`` so the FastAPI app can read it again."""
    size = 0
    while True:
        message = await receive()
        pending.append(message)
        if message["type"] != "http.request":
            return None
        size += len(message.get("body", b""))
        if size > limit:
            return None
        if not message.get("more_body", False):
            break
    if len(pending) == 1:
        body: bytes = pending[0].get("body", b"")
        return body
    return b"".join(m.get("body", b"") for m in pending)


def _replay(pending: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that hands out ``pending`` first, then reads on."""
    queue = list(pending)

    async def replay() -> Message:
        if queue:
            return queue.pop(0)
        return await receive()

    return replay


def served(app: FastAPI) -> ASGIApp:
    """What uvicorn runs for an app of :func:`flts.api.create_app`: a front *outside* the
    FastAPI app, so ordinary forecasts skip FastAPI's own layers too (error, telemetry and
    body-limit middlewares, ~15 us a request). The front inside the app (the middleware)
    still serves embedders that run the app itself, such as the tests."""
    return ForecastFront(app, app.state.forecast_service, app.state.metrics)
