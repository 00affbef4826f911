"""Bus backends by URL scheme, imported lazily (fsspec's ``registry.py`` is the model).

A backend whose dependencies are an optional extra (Kafka) is only imported when its scheme is
asked for, and a missing dependency becomes an install hint instead of an ImportError. New
backends register with :func:`register_backend` (one line next to the others here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from flts._lazy import import_target
from flts.bus.base import Bus
from flts.exceptions import ConfigurationError
from flts.redaction import redact


class BackendEntry(NamedTuple):
    target: str  # "module:Class"
    extra: str | None = None  # pip extra that provides the dependencies, if any
    package: str | None = None  # the top-level import that fails without the extra


BACKENDS: dict[str, BackendEntry] = {
    "memory": BackendEntry("flts.bus.memory:MemoryBus"),
    "sqlite": BackendEntry("flts.bus.sqlite:SQLiteBus"),
    "kafka": BackendEntry("flts.bus.kafka:KafkaBus", extra="kafka", package="confluent_kafka"),
}


def register_backend(
    scheme: str,
    target: str,
    *,
    extra: str | None = None,
    package: str | None = None,
    clobber: bool = False,
) -> None:
    """Map ``scheme`` to ``"module:Class"``; refuses to replace an entry unless ``clobber``."""
    if scheme in BACKENDS and not clobber and BACKENDS[scheme].target != target:
        raise ConfigurationError(f"bus scheme {scheme!r} is already registered")
    if ":" not in target:
        raise ConfigurationError(f"bus backend target {target!r} must be 'module:Class'")
    BACKENDS[scheme] = BackendEntry(target, extra, package)


def backend_class(scheme: str) -> type[Bus]:
    """The bus class for ``scheme``, importing its module on first use."""
    entry = BACKENDS.get(scheme)
    if entry is None:
        raise ConfigurationError(
            f"unknown bus scheme {scheme!r}; known schemes: {', '.join(sorted(BACKENDS))}"
        )
    cls: type[Bus] = import_target(entry.target, package=entry.package, extra=entry.extra)
    return cls


def open_bus(url: str, **options: Any) -> Bus:
    """Open the bus at ``url`` (``memory://``, ``sqlite:///.flts/bus.db``, ...).

    ``options`` go to the backend (e.g. ``lease_seconds=5`` for SQLite) and override URL
    query parameters.
    """
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            f"bus URL {redact(url)!r} has no scheme; expected one of "
            + ", ".join(f"{s}://" for s in sorted(BACKENDS))
        )
    return backend_class(scheme.lower()).from_url(url, **options)
