"""Typed errors of :mod:`flts.client`, one class per kind of refusal, built from the problem
document the FLTS services answer (``detail`` and ``problems``; the gateway's
``{"detail", "problems"}`` and a bare ``detail`` are read too)."""

from __future__ import annotations

import math
from typing import Any

import httpx


class FLTSClientError(Exception):
    """A request FLTS refused (``status`` set) or could not be sent (``status`` None).

    ``problems`` are the server's lines, every reason it gave; ``response`` the raw answer."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problems: list[str] | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.problems = problems if problems is not None else [message]
        self.response = response


class ValidationFailed(FLTSClientError):
    """400 or 422: the request or its data is not acceptable; ``problems`` says why."""


class Unauthorized(FLTSClientError):
    """401: no API key, or one the server does not know."""


class Forbidden(FLTSClientError):
    """403: the API key lacks the route's scope."""


class NotFound(FLTSClientError):
    """404: no such dataset, identifier or route."""


class Conflict(FLTSClientError):
    """409: the request conflicts with what is stored (e.g. re-sent rows with other values)."""


class PayloadTooLarge(FLTSClientError):
    """413: the body is over the server's limit."""


class UnsupportedMedia(FLTSClientError):
    """415: the body's content type is not one the route takes."""


class Unavailable(FLTSClientError):
    """503: not ready (no champion loaded yet, a backend outage); ``retry_after`` seconds is
    the server's advice. Raised once the client's bounded retries are spent."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """429: too many forecasts in progress on the replica."""


class DeadlineExceeded(FLTSClientError):
    """504: the forecast took longer than the server's time limit."""


class ServerError(FLTSClientError):
    """500 or another status the services do not answer on purpose."""


class ConnectionFailed(FLTSClientError):
    """The request could not be sent or its answer not read (refused, reset, timed out)."""


_BY_STATUS: dict[int, type[FLTSClientError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMedia,
    422: ValidationFailed,
    429: Overloaded,
    503: Unavailable,
    504: DeadlineExceeded,
}


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (the services send whole seconds; a date is not used)."""
    value = response.headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _problems(response: httpx.Response) -> list[str]:
    try:
        document = response.json()
    except ValueError:
        text = response.text.strip()
        return [text or f"HTTP {response.status_code}"]
    if isinstance(document, dict):
        problems = document.get("problems")
        if isinstance(problems, list) and problems:
            return [str(p) for p in problems]
        detail = document.get("detail", document.get("message", document.get("error")))
        if isinstance(detail, list):  # FastAPI's own validation errors
            return [
                str(item.get("msg", item)) if isinstance(item, dict) else str(item)
                for item in detail
            ]
        if detail is not None:
            return [str(detail)]
    return [f"HTTP {response.status_code}"]


def error_from(response: httpx.Response) -> FLTSClientError:
    """The typed error of a refused ``response``."""
    problems = _problems(response)
    status = response.status_code
    message = f"{response.request.method} {response.request.url.path}: {status}: " + "; ".join(
        problems
    )
    cls = _BY_STATUS.get(status, ServerError)
    if issubclass(cls, Unavailable):
        return cls(
            message,
            status=status,
            problems=problems,
            response=response,
            retry_after=retry_after(response),
        )
    return cls(message, status=status, problems=problems, response=response)
