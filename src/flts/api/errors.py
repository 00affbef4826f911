"""Errors of the inference API as RFC 9457 problem documents (DESIGN.md rule 8).

Every expected failure is an :class:`ApiError` with a status that means something and one
line per problem, so a caller fixes a request in one pass::

    {"type": "about:blank", "title": "Unprocessable Content", "status": 422,
     "detail": "column 'down' has missing values at history[3]",
     "problems": ["column 'down' has missing values at history[3]"]}

422 bad input, 413 too large, 429 overloaded, 503 (+ ``Retry-After``) no model yet, 504 timed
out. A 500 is reserved for bugs and broken models, never for a state a client can cause.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from flts.exceptions import DataValidationError

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """An HTTP answer other than success, with its reasons."""

    def __init__(
        self,
        status: int,
        problems: Sequence[str],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("; ".join(problems))
        self.status = status
        self.problems = tuple(problems)
        self.headers = dict(headers or {})

    @classmethod
    def invalid(cls, *problems: str) -> ApiError:
        return cls(422, problems)

    @classmethod
    def from_validation(cls, exc: DataValidationError, prefix: str = "") -> ApiError:
        return cls(422, [prefix + p for p in exc.problems])

    @classmethod
    def unavailable(cls, problem: str, retry_after: float) -> ApiError:
        return cls(503, [problem], headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


def problem_response(
    status: int, problems: Iterable[str], headers: Mapping[str, str] | None = None
) -> Response:
    items = list(problems)
    document: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": "; ".join(items),
        "problems": items,
    }
    return Response(
        orjson.dumps(document), status_code=status, headers=headers, media_type=PROBLEM_JSON
    )


def api_error_response(exc: ApiError) -> Response:
    return problem_response(exc.status, exc.problems, exc.headers)


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
    """Answer every error the framework raises as a problem document too."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return api_error_response(exc)

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(422, describe_pydantic_errors(exc.errors()))

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return problem_response(exc.status_code, [str(exc.detail)], exc.headers)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http_exception)
