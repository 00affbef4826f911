"""What every service needs, built once from settings and opened lazily.

MLflow takes over a second to import, and a gateway or a preprocess worker never needs it,
so each backend is opened on first use rather than at start-up.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from flts.bus import Bus, open_bus
from flts.promotion import PromotionStore
from flts.settings import Settings
from flts.storage import ObjectStore

if TYPE_CHECKING:
    from flts.tracking import Tracker


class ServiceContext:
    """Backends chosen by the settings' URLs: bus, object store, tracking, promotions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def bus(self) -> Bus:
        return open_bus(self.settings.bus.url)

    @cached_property
    def store(self) -> ObjectStore:
        return ObjectStore(self.settings.storage.url, **self.settings.storage.options())

    @cached_property
    def tracker(self) -> Tracker:
        from flts.tracking import Tracker

        return Tracker(self.settings)

    @cached_property
    def promotions(self) -> PromotionStore:
        return PromotionStore(
            self.store, run_exists=self.tracker.run_exists, on_damaged=_count_damaged
        )

    def close(self) -> None:
        """Close whatever was opened (the bus waits for running handlers)."""
        if "bus" in self.__dict__:
            self.bus.close()


def _count_damaged(identifier: str, key: str, reason: str) -> None:
    """Count a damaged promotion record a reader skipped (the reader logs it)."""
    from flts.services.metrics import worker_metrics

    worker_metrics().history_damaged.labels(identifier).inc()
