"""HTTP answers of the error tree: every :class:`~flts.exceptions.FLTSError` becomes an RFC 9457
problem document here, from the class alone (docs/architecture.md, rule 8)::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "column 'down' has missing values at history[3]",
     "problems": ["column 'down' has missing values at history[3]"]}

The status is ``exc.http_status`` (422 bad input, 413 too large, 429 overloaded, 503 no model
yet, 504 timed out, 500 only for bugs and broken models), the lines are ``exc.problems`` and
the headers ``exc.headers()`` (``Retry-After`` on 429 and 503). :func:`error_response` is the
one translation; the forecast routes and FastAPI's exception handlers both use it, on the
inference API and the gateway alike (one error shape on both apps, docs/clients.md).

The same module documents that shape: :func:`problem_responses` declares a route's refusals
for its OpenAPI operation, and :func:`document_contract` makes every refusal of an app's
OpenAPI document a problem document (FastAPI's own 422 schema included) and adds 401 and 403 to
every operation the auth layer guards, so the document lists every status an operation can
answer (checked by the contract fuzzer, tests/contract/test_openapi_contract.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from flts.exceptions import FLTSError
from flts.redaction import redact

PROBLEM_JSON = "application/problem+json"

#: The members every problem document has; a serving protocol's routes add their own (the
#: v2 ``error``, MLflow's ``error_code`` and ``message``), so others are allowed.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail", "problems"],
    "properties": {
        "type": {"type": "string", "description": "Always `about:blank`: the status says it."},
        "title": {"type": "string", "description": "The status's reason phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "Every problem, joined with `; `."},
        "problems": {
            "type": "array",
            "items": {"type": "string"},
            "description": "One line per problem: what is wrong and where.",
        },
    },
}

#: What each refusal means, for the OpenAPI document (docs/architecture.md, rule 8).
REFUSALS: dict[int, str] = {
    400: "Not a request of the protocol (the reasons in `problems`)",
    401: "No API key, or not a valid one (`WWW-Authenticate: Bearer`)",
    403: "The API key lacks the scope this route needs",
    404: "No such resource",
    405: "Method not allowed (`Allow` lists the methods of the path)",
    409: "Conflicts with the current state",
    413: "The request is too large",
    415: "Unsupported content type",
    421: "Misdirected: another shard's replica serves this identifier (serving.shard)",
    422: "Bad input: every problem listed in `problems`",
    429: "Overloaded: retry after `Retry-After` seconds",
    503: "Unavailable for now (no model yet, or a backend outage): retry after `Retry-After`",
    504: "Timed out",
}


def problem_response(
    status: int,
    problems: Iterable[str],
    headers: Mapping[str, str] | None = None,
    extensions: Callable[[str], Mapping[str, Any]] | None = None,
) -> Response:
    """The problem document of ``problems``; ``extensions(detail)`` adds members (RFC 9457
    extension members: the error fields a serving protocol's clients read, for instance)."""
    items = [redact(problem) for problem in problems]
    detail = "; ".join(items)
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "problems": items,
    }
    if extensions is not None:
        document.update(extensions(detail))
    return Response(
        orjson.dumps(document), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def problem_responses(
    *codes: int, schema: Mapping[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of a route's refusals ``codes``: problem documents (with the
    members of ``schema`` where a protocol adds some)."""
    document = dict(schema or PROBLEM_SCHEMA)
    return {
        code: {"description": REFUSALS[code], "content": {PROBLEM_JSON: {"schema": document}}}
        for code in codes
    }


def document_contract(app: FastAPI, guarded: Callable[[str], bool]) -> None:
    """Finish ``app``'s OpenAPI document once, when it is first asked for: every 4xx/5xx
    response of every operation is a problem document (FastAPI declares its own 422 as
    ``HTTPValidationError`` JSON, which this app never sends), and every operation on a path
    ``guarded`` accepts (the auth layer's policy) documents 401 and 403."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        for path, item in document.get("paths", {}).items():
            for operation in item.values():
                responses = operation.setdefault("responses", {})
                if guarded(path):
                    for code, response in problem_responses(401, 403).items():
                        responses.setdefault(str(code), response)
                for code, response in responses.items():
                    content = response.get("content", {})
                    if code[0] in "45" and PROBLEM_JSON not in content:
                        response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}
                        response["description"] = REFUSALS.get(int(code), response["description"])
        schemas = document.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def allowed_methods(app: FastAPI, scope: Mapping[str, Any]) -> list[str]:
    """Every method some route of ``app`` answers on the request's path: the ``Allow`` of a
    405 (Starlette's own names only the first route of the path, not a GET beside a POST)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "type": "http"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def error_response(exc: FLTSError) -> Response:
    """The problem document of any error of the tree."""
    return problem_response(exc.http_status, exc.problems, exc.headers())


def describe_pydantic_errors(errors: Iterable[Mapping[str, Any]], prefix: str = "") -> list[str]:
    """One line per pydantic error: ``history[2]: Input should be a valid dictionary``."""
    lines = []
    for error in errors:
        location = prefix
        for part in error.get("loc", ()):
            if part in ("body", "query"):
                continue
            if isinstance(part, int):
                location += f"[{part}]"
            else:
                location += f".{part}" if location else str(part)
        message = str(error.get("msg", "invalid value"))
        lines.append(f"{location}: {message}" if location else message)
    return lines or ["invalid request"]


def install_error_handlers(
    app: FastAPI, prepare: Callable[[FLTSError], None] | None = None
) -> None:
    """Answer every error of the routes FastAPI serves as a problem document too;
    ``prepare(exc)`` may adjust an error of the tree first (the gateway's configured
    ``Retry-After`` on outages)."""

    async def on_flts_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FLTSError)
        if prepare is not None:
            prepare(exc)
        return error_response(exc)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, describe_pydantic_errors(exc.errors()))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return problem_response(exc.status_code, [str(exc.detail)], headers)

    app.add_exception_handler(FLTSError, on_flts_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
