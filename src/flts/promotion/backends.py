"""What the promotion core needs from outside: the backends a service context opens.

A protocol rather than :class:`flts.services.context.ServiceContext` itself, so the core does
not depend on the service layer built around it (any object with these attributes will do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from flts.bus import Bus
    from flts.promotion.pointer import PromotionStore
    from flts.storage import ObjectStore
    from flts.tracking import Tracker


class Backends(Protocol):
    @property
    def bus(self) -> Bus: ...

    @property
    def store(self) -> ObjectStore: ...

    @property
    def tracker(self) -> Tracker: ...

    @property
    def promotions(self) -> PromotionStore: ...
