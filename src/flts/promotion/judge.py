"""Judging one config hash: every candidate scored by us on the test split, then the gate.

Trainer-reported metrics are never read for ranking (docs/architecture.md, rules 3 and 14):

1. the processed test split is loaded and windowed (original units);
2. every candidate that logged a model is scored with :func:`flts.evaluation.score`;
3. the persistence baseline is scored in-process on the same windows, and the current champion
   of the identifier is re-scored on them when its feature spec matches (else its recorded
   scores stand in);
4. :class:`~flts.promotion.gate.PromotionGate` judges the best candidate.

The result is a :class:`~flts.promotion.decisions.Decision`; nothing here has side effects.
"""

from __future__ import annotations

import functools
import logging
import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from flts.data.processed import ProcessedKeys, read_splits
from flts.evaluation import Scores, score
from flts.exceptions import DataValidationError, ModelError
from flts.models.baselines import Persistence
from flts.promotion.decisions import HEADLINE, Decision, LeaderboardEntry
from flts.promotion.gate import PromotionGate
from flts.promotion.pointer import Promotion

if TYPE_CHECKING:
    from flts.data.prepare import PreparedData
    from flts.data.windows import Windows
    from flts.models.base import Forecaster
    from flts.promotion.backends import Backends
    from flts.tracking import RunRecord

log = logging.getLogger(__name__)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _headline(scores: Scores) -> dict[str, float | None]:
    return {name: _finite(getattr(scores, name)) for name in HEADLINE}


def _recorded_scores(recorded: dict[str, float]) -> Scores:
    """A champion's recorded figures as :class:`Scores` (when it cannot be re-scored)."""
    return Scores(
        nrmse=recorded.get("nrmse", math.inf),
        mae5=recorded.get("mae5", math.inf),
        rmse5=recorded.get("rmse5", math.inf),
        per_target={},
        n_windows=0,
    )


def _candidates(runs: list[RunRecord]) -> dict[str, RunRecord]:
    """One run per model type: its oldest finished run (the one the trainer re-announces),
    else its latest terminal (failed) run."""
    chosen: dict[str, RunRecord] = {}
    for run in runs:  # oldest first
        if not run.terminal:
            continue
        current = chosen.get(run.model_type)
        if current is None or not current.finished:
            chosen[run.model_type] = run
    return dict(sorted(chosen.items()))


def _score_baseline(prepared: PreparedData, test: Windows) -> Scores:
    """Persistence on the same windows, computed here (it needs no training)."""
    baseline = Persistence(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    baseline.fit(prepared.train, prepared.validation)
    return score(test.targets, baseline.predict(test), prepared.spec.targets)


def _score_model(model: Forecaster, prepared: PreparedData, test: Windows) -> Scores:
    if model.spec != prepared.spec:
        raise ModelError(f"{model.model_type} was trained with a different feature spec")
    try:
        prediction = model.predict(test)
    except (ValueError, RuntimeError, ArithmeticError) as exc:  # the model's own failure
        raise ModelError(f"{model.model_type} cannot predict: {exc}") from exc
    if not np.all(np.isfinite(prediction)):
        raise ModelError(f"{model.model_type} predicted non-finite values")
    return score(test.targets, prediction, prepared.spec.targets)


class Judge:
    """Scores the candidates of a config hash and applies the gate (see module doc)."""

    def __init__(self, backends: Backends, gate: PromotionGate) -> None:
        self.backends = backends
        self.gate = gate
        self.policy = gate.policy

    def decide(
        self,
        identifier: str,
        config_hash: str,
        runs: list[RunRecord],
        *,
        expected_models: list[str],
        missing: list[str],
        deadline_passed: bool,
        now: datetime,
    ) -> Decision:
        """The decision for ``config_hash``: state ``promoting`` when it promotes (the
        promotion still to be carried out), else ``done``."""
        store = self.backends.store
        prepared = read_splits(store, ProcessedKeys.for_hash(config_hash)).windows()
        test = prepared.test
        if test is None or len(test) == 0:
            raise DataValidationError(f"processed data {config_hash} has no test windows")
        baseline = _score_baseline(prepared, test)

        scored: dict[str, tuple[RunRecord, Scores]] = {}
        others: list[LeaderboardEntry] = []
        for model_type, run in _candidates(runs).items():
            unranked = functools.partial(
                LeaderboardEntry,
                model_type=model_type,
                run_id=run.run_id,
                train_seconds=run.train_seconds,
            )
            if not run.finished:
                reason = f"training failed: {run.error or run.status}"
                others.append(unranked(status="FAILED", reason=reason))
                continue
            try:
                scores = self._score_run(run.run_id, prepared, test)
            except (ModelError, DataValidationError) as exc:
                others.append(unranked(status="UNSCORED", reason=f"could not be scored: {exc}"))
                continue
            scored[model_type] = (run, scores)
        others += [
            LeaderboardEntry(
                model_type=m, status="MISSING", reason="did not report before the deadline"
            )
            for m in missing
        ]

        candidate_runs = {run.run_id: scores for run, scores in scored.values()}
        previous, champion_scores = self._champion(identifier, prepared, test, candidate_runs)
        ranking = self.policy.rank({m: s for m, (_, s) in scored.items()})
        best = scored[ranking[0]][1] if ranking else None
        verdict = self.gate.decide(best, baseline, champion_scores)
        best_value = math.nan if best is None else self.policy.value(best)
        entries: list[LeaderboardEntry] = []
        promotion: Promotion | None = None
        champion: dict[str, Any] | None = None
        correlation_id = (runs[0].correlation_id or None) if runs else None
        for position, model_type in enumerate(ranking):
            run, scores = scored[model_type]
            if position == 0:
                promoted, reason = verdict.promote, verdict.reason
            else:
                promoted = False
                reason = (
                    f"ranked {position + 1} of {len(ranking)}: {self.policy.metric} "
                    f"{self.policy.value(scores):.4f} vs best {best_value:.4f}"
                )
            entry = LeaderboardEntry(
                model_type=model_type,
                run_id=run.run_id,
                status="SUCCESS",
                train_seconds=run.train_seconds,
                promoted=promoted,
                reason=reason,
                **_headline(scores),
            )
            entries.append(entry)
            if promoted:
                correlation_id = run.correlation_id or correlation_id
                promotion = Promotion(
                    run_id=run.run_id,
                    model_type=model_type,
                    config_hash=config_hash,
                    identifier=identifier,
                    scores=entry.figures(),
                    promoted_at=now,
                    previous_run_id=None if previous is None else previous["run_id"],
                    reason=reason,
                )
                champion = {"run_id": run.run_id, "model_type": model_type, "nrmse": scores.nrmse}

        return Decision(
            identifier=identifier,
            config_hash=config_hash,
            state="promoting" if promotion is not None else "done",
            decided_at=now,
            reason_code=verdict.reason_code,
            correlation_id=correlation_id,
            deadline_passed=deadline_passed,
            expected_models=expected_models,
            missing_models=missing,
            test_windows=len(test),
            baseline=_headline(baseline),
            previous_champion=previous,
            leaderboard=entries + others,
            champion=champion,
            promotion=promotion,
        )

    def _score_run(self, run_id: str, prepared: PreparedData, test: Windows) -> Scores:
        return _score_model(self.backends.tracker.load_model(run_id), prepared, test)

    def _champion(
        self,
        identifier: str,
        prepared: PreparedData,
        test: Windows,
        scored: dict[str, Scores],
    ) -> tuple[dict[str, Any] | None, Scores | None]:
        """The current champion and its scores on these test windows when it can be
        re-scored (same feature spec), else its recorded scores."""
        current = self.backends.promotions.current(identifier)
        if current is None:
            return None, None
        rescored: Scores | None = scored.get(current.run_id)
        if rescored is None:
            try:
                rescored = self._score_run(current.run_id, prepared, test)
            except (ModelError, DataValidationError) as exc:
                log.info("champion %s not re-scored (%s): using its record", current.run_id, exc)
        scores = rescored if rescored is not None else _recorded_scores(current.scores)
        info = {
            "run_id": current.run_id,
            "model_type": current.model_type,
            "config_hash": current.config_hash,
            "nrmse": _finite(scores.nrmse),
            "rescored": rescored is not None,
        }
        return info, scores
