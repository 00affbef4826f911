"""The event bus: one interface (:class:`Bus`), backends chosen by URL scheme.

>>> from flts.bus import open_bus
>>> with open_bus("memory://") as bus:  # or "sqlite:///.flts/bus.db"
...     pass

Delivery semantics (at-least-once, retries, dead letters, idempotency, shutdown) are
described once in :mod:`flts.bus.base`.
"""

from flts.bus.base import (
    Bus,
    ConsumeStats,
    DeadLetter,
    Handler,
    IdempotencyStore,
    Lag,
    Message,
    RetryPolicy,
)
from flts.bus.registry import BACKENDS, backend_class, open_bus, register_backend

__all__ = [
    "BACKENDS",
    "Bus",
    "ConsumeStats",
    "DeadLetter",
    "Handler",
    "IdempotencyStore",
    "Lag",
    "Message",
    "RetryPolicy",
    "backend_class",
    "open_bus",
    "register_backend",
]
