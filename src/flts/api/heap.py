"""Keep CPython's cyclic garbage collector from stalling a busy replica.

A serving process holds a few hundred thousand long-lived objects (its libraries, MLflow and
SQLAlchemy once the champion is verified, the model) and allocates short-lived ones on every
request. The collector's oldest generation walks every long-lived object, which under load
stalls the event loop for 50-200 ms every few seconds: that, not the forecasts, was the p99
of a busy replica. ``gc.freeze`` moves objects to a permanent generation that is never walked.

* :func:`settle_heap` runs after a swap: unfreeze, collect (so the model just replaced is
  freed, whatever its reference cycles), freeze. One pause per swap, none in between. A
  replica of a fleet swaps (cold loads, evictions) many times a second, and each full
  collection of its heap costs tens of milliseconds of GIL: :class:`SettleThrottle` settles
  at most once per interval, and once more after the last swap of a burst.
* :func:`freeze_long_lived` is a collector callback for what arrives later (imports done lazily
  off the request path): when a full collection leaves many survivors, those are long-lived by
  definition, and are frozen. In-flight requests' objects are a few hundred, far below the
  threshold, so they are not frozen with them.
"""

from __future__ import annotations

import gc
import threading
import time
from typing import Any

#: Survivors of a full collection above which they are frozen (imports, not requests).
LONG_LIVED_SURVIVORS = 10_000


def settle_heap() -> None:
    """Collect once and freeze everything alive (see module doc)."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def freeze_long_lived(phase: str, info: dict[str, Any]) -> None:
    """``gc.callbacks`` entry: freeze a full collection's survivors when they are many."""
    full = phase == "stop" and info["generation"] == 2
    if full and len(gc.get_objects(generation=2)) >= LONG_LIVED_SURVIVORS:
        gc.freeze()


def install() -> None:
    """Register :func:`freeze_long_lived` once per process."""
    if freeze_long_lived not in gc.callbacks:
        gc.callbacks.append(freeze_long_lived)


class SettleThrottle:
    """:func:`settle_heap` at most once every ``interval`` seconds; a swap inside the
    interval is settled by one trailing run at its end (a daemon timer)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            wait = self._last + self.interval - time.monotonic()
            if wait <= 0:
                self._settle_locked()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._trailing)
                self._timer.daemon = True
                self._timer.start()

    def _trailing(self) -> None:
        with self._lock:
            self._timer = None
            self._settle_locked()

    def _settle_locked(self) -> None:
        settle_heap()
        self._last = time.monotonic()
