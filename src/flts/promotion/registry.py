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


REGISTRY_ACTOR = "mlflow-registry"
"""The caller recorded in the history for a promotion made by moving the alias."""


def unconfirmed_aliases(tracker: Tracker) -> list[str]:
    """Identifiers whose ``champion`` alias is not where FLTS last put it, by one registry
    listing: the only ones :func:`alias_moved` can find moved, so a sweep over a fleet reads
    the alias, the pointer and the run of these alone. The others name exactly the version
    FLTS wrote with its run tag (:meth:`~flts.tracking.Tracker.set_alias`), which is what
    :func:`alias_moved` would conclude after three reads each."""
    states = tracker.alias_states(CHAMPION_ALIAS)
    return sorted(
        identifier
        for identifier, state in states.items()
        if state.version is not None and not state.as_written
    )


def alias_moved(tracker: Tracker, identifier: str, pointer_run_id: str | None) -> str | None:
    """The run someone other than FLTS moved ``champion`` to, else ``None``.

    The alias differs from the pointer in two cases: a writer has committed a promotion and
    not yet moved the alias (or a rollback, the same), or a person moved it in the MLflow UI
    or API. FLTS tags the registered model with the run it last pointed the alias at, *after*
    moving the alias; so an alias equal to that tag is FLTS's own and merely lags the
    pointer, and an alias that matches neither the pointer nor the tag was moved by hand.
    """
    alias_run = tracker.alias_run_id(identifier, CHAMPION_ALIAS)
    if alias_run is None or alias_run == pointer_run_id:
        return None
    if alias_run == tracker.alias_written(identifier, CHAMPION_ALIAS):
        return None
    return alias_run
