"""One error tree for the whole project.

Every error FLTS raises on purpose derives from :class:`FLTSError`, so callers can catch the
family and boundaries (CLI, HTTP) can translate it into one clear line or status code::

    FLTSError
    ├── ConfigurationError        bad or missing settings, recipe or feature spec   (422)
    ├── DataValidationError       input data that breaks the data contract          (422)
    │   ├── FeatureMismatchError  inference input that does not fit a model's spec  (422)
    │   └── EventValidationError  bus message that is not a valid, supported event  (422)
    ├── ModelError                model cannot be built, trained, saved or loaded   (500)
    │   └── ModelNotFittedError   predict/save called before fit                    (500)
    ├── DependencyMissingError    an optional extra is not installed                (500)
    └── BusError                  the event bus cannot be reached or is closed      (503)

``http_status`` is the status an HTTP boundary should answer with; data problems are the
caller's fault (4xx), model and dependency problems are ours.
"""

from __future__ import annotations


class FLTSError(Exception):
    """Base class of every error FLTS raises deliberately."""

    http_status: int = 500


class ConfigurationError(FLTSError):
    """A recipe, feature spec or setting is invalid or inconsistent."""

    http_status = 422


class DataValidationError(FLTSError):
    """Input data breaks the data contract.

    ``problems`` holds one line per problem found (all of them, not just the first), so a
    user fixes a file in one pass; the message joins them.
    """

    http_status = 422

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems: tuple[str, ...] = problems


class FeatureMismatchError(DataValidationError):
    """Inference input does not match the feature spec saved with the model."""


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


class EventValidationError(DataValidationError):
    """Bytes from the bus are not a valid event this version understands: malformed JSON, an
    unknown type, a newer ``schema_version``, or fields that break the envelope contract.

    A consumer dead-letters such a message instead of retrying it: no retry can fix it.
    """


class BusError(FLTSError):
    """The event bus cannot serve a request (closed, unreachable, locked for too long).

    Transient by nature, so an HTTP boundary answers 503 and the caller may retry.
    """

    http_status = 503
