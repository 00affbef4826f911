"""Operator promotions (``flts promote``, ``flts rollback``, the ``champion`` alias moved in the
MLflow registry), recorded and announced exactly like the evaluator's: history entry,
pointers, registry alias, ``model-selected``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flts.exceptions import ConfigurationError
from flts.promotion.announce import announce, carry_out
from flts.promotion.decisions import Decision, read_decision
from flts.promotion.pointer import Promotion
from flts.promotion.registry import REGISTRY_ACTOR, alias_moved, move_champion_alias

if TYPE_CHECKING:
    from flts.promotion.backends import Backends

log = logging.getLogger(__name__)


def promote_run(
    backends: Backends,
    run_id: str,
    *,
    reason: str = "manual promotion",
    actor: str | None = None,
) -> Promotion:
    """Make a finished run the champion of its identifier; scores come from its evaluation
    when there was one. ``actor`` (who asked) is recorded in the history entry."""
    run = backends.tracker.get_run(run_id)
    if run is None:
        raise ConfigurationError(f"no tracking run {run_id!r}")
    if not run.finished:
        raise ConfigurationError(f"run {run_id} is {run.status}, not a trained model")
    scores: dict[str, float] = {}
    document = read_decision(backends.store, run.identifier, run.config_hash)
    if document is not None:
        for entry in Decision.model_validate(document).leaderboard:
            if entry.run_id == run_id:
                scores = entry.figures()
    current = backends.promotions.current(run.identifier)
    promotion = Promotion(
        run_id=run_id,
        model_type=run.model_type,
        config_hash=run.config_hash,
        identifier=run.identifier,
        scores=scores,
        previous_run_id=None if current is None else current.run_id,
        reason=reason,
        action="manual",
        artifact_digest=run.artifact_digest,
        actor=actor,
    )
    return carry_out(backends, promotion, correlation_id=run.correlation_id or None).promotion


def rollback_champion(
    backends: Backends,
    identifier: str = "global",
    *,
    reason: str = "manual rollback",
    actor: str | None = None,
) -> Promotion:
    """Restore the previous valid champion of ``identifier`` and announce it, recording
    ``actor`` as who asked."""
    promotion = backends.promotions.rollback(identifier, reason=reason, actor=actor)
    announce(backends, promotion)
    return promotion


def follow_registry_alias(backends: Backends, identifier: str) -> Promotion | None:
    """Honour a ``champion`` alias someone moved in the MLflow registry (UI or API).

    A move to a finished run of this identifier is a manual promotion recorded with the
    caller ``mlflow-registry`` (:func:`promote_run`: history, pointer compare-and-swap,
    ``model-selected``), returned. A move FLTS cannot honour (a run that does not exist,
    failed, or belongs to another identifier) is refused: logged with its reason and the
    alias put back on the champion. ``None`` when the alias was not moved by hand, was
    refused, or the champion changed meanwhile (the next pass looks again).
    """
    from flts.exceptions import ConflictError

    current = backends.promotions.current(identifier)
    moved = alias_moved(backends.tracker, identifier, None if current is None else current.run_id)
    if moved is None:
        return None
    run = backends.tracker.get_run(moved)
    refusal = None
    if run is None:
        refusal = f"run {moved} does not exist"
    elif not run.finished:
        refusal = f"run {moved} is {run.status}, not a trained model"
    elif run.identifier != identifier:
        refusal = f"run {moved} was trained for {run.identifier!r}, not {identifier!r}"
    if refusal is not None:
        log.warning(
            "%s: the champion alias was moved in the registry to run %s; refused (%s), "
            "the alias is put back on the champion %s",
            identifier,
            moved,
            refusal,
            None if current is None else current.run_id,
            extra={"event": "registry-alias-refused", "identifier": identifier, "run_id": moved},
        )
        if current is not None:
            move_champion_alias(backends.tracker, current)
        return None
    try:
        promotion = promote_run(
            backends,
            moved,
            reason="champion alias moved in the MLflow registry",
            actor=REGISTRY_ACTOR,
        )
    except ConflictError as exc:
        log.info("%s: registry alias move deferred, the champion changed: %s", identifier, exc)
        return None
    log.info(
        "%s: promoted run %s because the champion alias was moved in the registry",
        identifier,
        moved,
        extra={"event": "promoted", "identifier": identifier, "run_id": moved},
    )
    return promotion
