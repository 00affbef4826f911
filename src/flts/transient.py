"""Which errors of the client libraries mean "the backend is unreachable, try again later".

The object store (s3fs over aiobotocore/aiohttp, or fsspec's other filesystems), the tracking
server (MLflow's REST client over requests/urllib3) and the broker each fail in their own
vocabulary when the server is down, restarting or overloaded. :func:`is_transient` knows that
vocabulary; :func:`translated` is the translation point each backend wraps its calls in, so
the rest of FLTS sees one class, :class:`~flts.exceptions.InfrastructureError`, and waits it
out (docs/architecture.md, rule 11). Anything else passes through unchanged: a missing object
is still ``KeyError``/``FileNotFoundError``, a refused credential still ``PermissionError``.

Client libraries wrap the network error they met (MLflow's ``MlflowException`` around a
``requests`` error around urllib3's ``MaxRetryError`` around ``ConnectionRefusedError``), so
the whole cause/context chain is inspected, not just the outermost exception.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from flts.exceptions import InfrastructureError

#: OS error numbers of a network that is down or a server that is not answering. ``EBUSY`` and
#: ``EREMOTEIO`` are what s3fs turns S3's 503 SlowDown and 500 InternalError into.
TRANSIENT_ERRNOS = frozenset(
    code
    for code in (
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
        errno.EAGAIN,
        errno.EBUSY,
        getattr(errno, "EREMOTEIO", 121),
    )
)
#: S3 error codes that say "the service is overloaded or restarting".
TRANSIENT_S3_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling"}
)
#: How far down a cause/context chain to look (chains are short; this only bounds cycles).
_MAX_CHAIN = 16


@cache
def _foreign_types() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the optional client libraries that are installed."""
    found: list[type[BaseException]] = []
    try:
        from botocore.exceptions import (  # type: ignore[import-untyped]
            ConnectionError as BotocoreConnectionError,  # endpoint refused, connect timeout
        )
        from botocore.exceptions import HTTPClientError  # connection closed, read timeout

        found += [BotocoreConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientConnectionError, ServerTimeoutError

        found += [ClientConnectionError, ServerTimeoutError]
    except ImportError:
        pass
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import RetryError, Timeout

        found += [RequestsConnectionError, RetryError, Timeout]
    except ImportError:
        pass
    try:
        from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

        found += [MaxRetryError, NewConnectionError, ProtocolError]
    except ImportError:
        pass
    return tuple(found)


def _transient_link(exc: BaseException) -> bool:
    """Whether this one exception (not its causes) is a sign of an unreachable backend."""
    if isinstance(exc, InfrastructureError | ConnectionError | TimeoutError | socket.gaierror):
        return True
    if isinstance(exc, _foreign_types()):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True  # by number: FileNotFoundError, PermissionError... keep their meaning
    response = getattr(exc, "response", None)  # botocore's ClientError
    if isinstance(response, dict) and type(exc).__name__ == "ClientError":
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in TRANSIENT_S3_CODES or (isinstance(status, int) and status >= 500)
    return False


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` or anything in its cause/context chain says a backend is unreachable
    (refused, reset, timed out, DNS failure, 5xx or "slow down" from the server)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < _MAX_CHAIN:
        if _transient_link(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def translated(backend: str, action: str = "") -> Iterator[None]:
    """Re-raise a transient error from the block as :class:`InfrastructureError` naming
    ``backend`` (and ``action``); let every other error through unchanged."""
    try:
        yield
    except InfrastructureError:
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise
        what = f"{backend} {action}".strip()
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        raise InfrastructureError(f"{what} unavailable: {detail}", retry_after=5) from exc
