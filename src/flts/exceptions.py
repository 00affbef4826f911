"""One error tree for the whole project.

Every error FLTS raises on purpose derives from :class:`FLTSError`, so callers can catch the
family and boundaries (CLI, HTTP) translate it into one clear line or status code from the
class alone (``http_status``, ``problems``, ``headers()``), never by matching text::

    FLTSError                                                                       status
    ├── ConfigurationError          bad or missing settings, recipe or feature spec   422
    ├── DataValidationError         input data that breaks the data contract          422
    │   ├── FeatureMismatchError    inference input that does not fit a model's spec  422
    │   └── EventValidationError    bus message that is not a valid, supported event  422
    ├── RequestError                a request refused for its form, not its data      400
    │   ├── AuthenticationError     no API key, or one that is not valid              401
    │   ├── PermissionDeniedError   a valid API key without the route's scope         403
    │   ├── NotFoundError           the named resource does not exist                 404
    │   ├── MisdirectedError        an identifier another inference shard serves      421
    │   ├── PayloadTooLargeError    body or batch over a configured limit             413
    │   ├── UnsupportedMediaError   a body in a content type the route does not take  415
    │   ├── OverloadedError         too many requests in flight (Retry-After)         429
    │   └── ConflictError           another writer changed what this one read         409
    ├── UnavailableError            a state that passes: retry later (Retry-After)    503
    │   ├── ModelUnavailableError   no champion loaded (yet) for an identifier        503
    │   └── InfrastructureError     object store, tracking server or broker down      503
    │       └── BusError            the event bus cannot be reached or is closed      503
    ├── DeadlineExceededError       the answer took longer than the request timeout   504
    ├── ModelError                  model cannot be built, trained, saved or loaded   500
    │   └── ModelNotFittedError     predict/save called before fit                    500
    ├── DependencyMissingError      an optional extra is not installed                500
    └── PipelineError               a pipeline run reached no decision                500

Data and request problems are the caller's fault (4xx); unavailability is transient (503 or
429 with ``Retry-After``); model, dependency and pipeline problems are ours (500).

:class:`InfrastructureError` is the one class of "a backend is unreachable, wait and try
again". Each backend turns its client library's connection errors into it at one place
(:func:`flts.transient.translated` in :mod:`flts.storage` and :mod:`flts.tracking`, the
bus's own translation in each bus backend), so the consume loop (:mod:`flts.bus.base`) waits
those out instead of dead-lettering, and an HTTP edge answers 503 with ``Retry-After``.
"""

from __future__ import annotations

import math

__all__ = [
    "AuthenticationError",
    "BusError",
    "ConfigurationError",
    "ConflictError",
    "DataValidationError",
    "DeadlineExceededError",
    "DependencyMissingError",
    "EventValidationError",
    "FLTSError",
    "FeatureMismatchError",
    "InfrastructureError",
    "MisdirectedError",
    "ModelError",
    "ModelNotFittedError",
    "ModelUnavailableError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "PipelineError",
    "RequestError",
    "UnavailableError",
    "UnsupportedMediaError",
]


class FLTSError(Exception):
    """Base class of every error FLTS raises deliberately.

    ``problems`` holds one line per problem (all of them, so a user fixes an input in one
    pass); the message joins them. Subclasses set ``http_status``.
    """

    http_status: int = 500

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems: tuple[str, ...] = problems or (self.__class__.__name__,)

    def headers(self) -> dict[str, str]:
        """Response headers an HTTP boundary adds (``Retry-After`` on transient states)."""
        return {}


class ConfigurationError(FLTSError):
    """A recipe, feature spec or setting is invalid or inconsistent."""

    http_status = 422


class DataValidationError(FLTSError):
    """Input data breaks the data contract."""

    http_status = 422

    def prefixed(self, prefix: str) -> DataValidationError:
        """The same error with ``prefix`` before every problem (``requests[3].``)."""
        return type(self)(*(prefix + p for p in self.problems))


class FeatureMismatchError(DataValidationError):
    """Inference input does not match the feature spec saved with the model."""


class EventValidationError(DataValidationError):
    """Bytes from the bus are not a valid event this version understands: malformed JSON, an
    unknown type, a newer ``schema_version``, or fields that break the envelope contract.

    A consumer dead-letters such a message instead of retrying it: no retry can fix it.
    """


class RequestError(FLTSError):
    """A request refused for its form (not its data): the client must change it."""

    http_status = 400


class AuthenticationError(RequestError):
    """No credentials, or credentials that are not valid (docs/security.md).

    ``WWW-Authenticate: Bearer`` tells the client which scheme to use (RFC 6750); a presented
    but unknown key adds ``error="invalid_token"``.
    """

    http_status = 401

    def __init__(self, *problems: str, invalid_token: bool = False) -> None:
        super().__init__(*problems)
        self.invalid_token = invalid_token

    def headers(self) -> dict[str, str]:
        challenge = 'Bearer realm="flts"'
        if self.invalid_token:
            challenge += ', error="invalid_token"'
        return {"WWW-Authenticate": challenge}


class PermissionDeniedError(RequestError):
    """Valid credentials that lack the scope the route needs."""

    http_status = 403


class NotFoundError(RequestError):
    """The named resource (dataset, run, identifier) does not exist."""

    http_status = 404


class MisdirectedError(RequestError):
    """A request for an identifier this inference replica does not own (``serving.shard``):
    another shard serves it, so sending it elsewhere is the fix, not retrying here."""

    http_status = 421


class PayloadTooLargeError(RequestError):
    """A body, upload or batch is over its configured limit."""

    http_status = 413


class UnsupportedMediaError(RequestError):
    """A body in a content type the route does not take."""

    http_status = 415


class ConflictError(RequestError):
    """Another writer changed the object this one read (a promotion pointer moved on since
    the champion was read): re-read and decide again."""

    http_status = 409


class _RetryLater:
    """Mixin for transient refusals: carries the ``Retry-After`` a client should honour."""

    retry_after: float

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class OverloadedError(_RetryLater, RequestError):
    """Too many requests are being processed; retry after ``retry_after`` seconds."""

    http_status = 429

    def __init__(self, *problems: str, retry_after: float = 1.0) -> None:
        super().__init__(*problems)
        self.retry_after = retry_after


class UnavailableError(_RetryLater, FLTSError):
    """A dependency or state that passes (no model yet, store or bus down): retry later."""

    http_status = 503

    def __init__(self, *problems: str, retry_after: float = 1.0) -> None:
        super().__init__(*problems)
        self.retry_after = retry_after


class ModelUnavailableError(UnavailableError):
    """No champion is loaded (yet) for the identifier asked about."""


class InfrastructureError(UnavailableError):
    """A backend (object store, tracking server, broker) cannot be reached right now.

    Never the message's or the request's fault: a consumer waits it out with backoff and
    never dead-letters for it, an HTTP boundary answers 503 with ``Retry-After``.
    """


class BusError(InfrastructureError):
    """The event bus cannot serve a request (closed, unreachable, locked for too long).

    Transient by nature, so an HTTP boundary answers 503 and the caller may retry.
    """


class DeadlineExceededError(FLTSError):
    """An answer took longer than the configured request timeout."""

    http_status = 504


class ModelError(FLTSError):
    """A model cannot be built, trained, saved or loaded."""


class ModelNotFittedError(ModelError):
    """``predict`` or ``save`` was called on a model that was never fitted."""


class DependencyMissingError(FLTSError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'flts[{extra}]'"
        )
        self.package = package
        self.extra = extra


class PipelineError(FLTSError):
    """A pipeline run did not reach a decision (timeout, or every trainer failed)."""
