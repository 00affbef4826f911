"""HTTP answers of the error tree: every :class:`~flts.exceptions.FLTSError` becomes an RFC 9457
problem document here, from the class alone (docs/architecture.md, rule 8)::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "column 'down' has missing values at history[3]",
     "problems": ["column 'down' has missing values at history[3]"]}

The status is ``exc.http_status`` (422 bad input, 413 too large, 429 overloaded, 503 no model
yet, 504 timed out, 500 only for bugs and broken models), the lines are ``exc.problems`` and
the headers ``exc.headers()`` (``Retry-After`` on 429 and 503). :func:`error_response` is the
one translation; the forecast routes and FastAPI's exception handlers both use it.
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

from flts.exceptions import FLTSError
from flts.redaction import redact

PROBLEM_JSON = "application/problem+json"


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


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of the routes FastAPI serves as a problem document too."""

    async def on_flts_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, FLTSError)
        return error_response(exc)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, describe_pydantic_errors(exc.errors()))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(exc.status_code, [str(exc.detail)], exc.headers)

    app.add_exception_handler(FLTSError, on_flts_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
