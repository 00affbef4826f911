"""Operator promotions (``flts promote``, ``flts rollback``), recorded and announced exactly
like the evaluator's: history entry, pointers, registry alias, ``model-selected``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flts.exceptions import ConfigurationError
from flts.promotion.announce import announce, carry_out
from flts.promotion.decisions import Decision, read_decision
from flts.promotion.pointer import Promotion

if TYPE_CHECKING:
    from flts.promotion.backends import Backends


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
