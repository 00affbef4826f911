"""Carrying out a promotion: history and pointers, then the registry alias, then the event.

The order is the point: the history entry and pointers are the durable fact, the registry alias
follows, and ``model-selected`` goes last so a replica reacting to it finds the registry
consistent (docs/architecture.md, rules 6 and 7). Every step is safe to repeat, so a promotion
interrupted by a crash is finished by running it again.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING

from flts.events import MODEL_SELECTED, ModelSelected, new_event
from flts.promotion.registry import move_champion_alias

if TYPE_CHECKING:
    from flts.promotion.backends import Backends
    from flts.promotion.pointer import Promotion, Recorded

_EVENT_NAMESPACE = uuid.UUID("5f0b6f0e-4d0c-4bb4-9d43-3c1f5b8e7a10")


def selected_event_id(promotion: Promotion) -> str:
    """Deterministic id of a promotion's ``model-selected`` event: a resumed promotion
    re-publishes the same id, which idempotent consumers drop."""
    stamp = promotion.promoted_at.isoformat()
    name = f"{promotion.identifier}/{promotion.config_hash}/{promotion.run_id}/{stamp}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def announce(
    backends: Backends,
    promotion: Promotion,
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> None:
    """Tell the world about a recorded promotion: registry alias first, then
    ``model-selected`` (with a fresh event id unless ``event_id`` is given)."""
    move_champion_alias(backends.tracker, promotion)
    payload = ModelSelected(
        run_id=promotion.run_id,
        model_type=promotion.model_type,
        previous_run_id=promotion.previous_run_id,
        scores={k: v for k, v in promotion.scores.items() if math.isfinite(v)},
        promoted_at=promotion.promoted_at,
    )
    event = new_event(
        payload,
        correlation_id=correlation_id,
        identifier=promotion.identifier,
        config_hash=promotion.config_hash,
    )
    if event_id is not None:
        event = event.model_copy(update={"event_id": event_id})
    backends.bus.publish(MODEL_SELECTED, event)


def carry_out(
    backends: Backends,
    promotion: Promotion,
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> Recorded:
    """Make ``promotion`` the champion and announce it; repeating it records nothing twice
    (:meth:`~flts.promotion.pointer.PromotionStore.commit`). Its ``previous_run_id`` is the
    champion it was decided against (``None``: none), checked by compare-and-swap. Returns
    what was recorded; the promotion is announced as the history holds it, also when another
    writer recorded it (the event id is deterministic for the evaluator, so consumers drop
    the duplicate)."""
    recorded = backends.promotions.commit(promotion, exact_previous=True)
    announce(backends, recorded.promotion, correlation_id=correlation_id, event_id=event_id)
    return recorded
