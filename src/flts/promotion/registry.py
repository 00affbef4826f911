"""The MLflow registry alias ``champion``: promotion decides where it points, tracking moves it.

The alias mirrors the pointer (docs/architecture.md, rule 6) for anything that reads the
registry (``models:/<prefix>-<identifier>@champion``); replicas follow the pointer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flts.promotion.pointer import Promotion
    from flts.tracking import Tracker

CHAMPION_ALIAS = "champion"


def move_champion_alias(tracker: Tracker, promotion: Promotion) -> str:
    """Point ``champion`` of the promotion's identifier at its run; return the model version."""
    return tracker.set_alias(promotion.run_id, promotion.identifier, CHAMPION_ALIAS)


def champion_alias_run_id(tracker: Tracker, identifier: str) -> str | None:
    """The run the registry alias ``champion`` names (``None`` before the first promotion)."""
    return tracker.alias_run_id(identifier, CHAMPION_ALIAS)
