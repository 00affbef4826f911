"""Judging one config hash: every candidate scored by us on the test split, then the gate.

Trainer-reported metrics are never read for ranking (docs/architecture.md, rules 3 and 14):

1. the processed test split is loaded and windowed (original units);
2. the persistence baseline is fitted and scored in-process on those windows; its forecast is
   also the reference of every candidate's MASE;
3. every candidate that logged a model is scored with :func:`flts.evaluation.score`, with its
   intervals at the configured levels from the calibration it was saved with (a model saved
   without one is scored without interval figures); the current champion of the identifier is
   re-scored on the same windows when its feature spec matches (else its recorded scores stand
   in);
4. :class:`~flts.promotion.gate.PromotionGate` judges the candidates best first, and the first
   it passes is promoted: the best on average may still lose to persistence at some horizon
   step, and the next one may not.

A candidate or champion that cannot be loaded or scored (a damaged artifact, a model that
raises or predicts non-finite values, a different feature spec) never stops a decision: the
candidate is ``UNSCORED`` with the reason, the champion stands on its recorded scores with the
reason in ``previous_champion``. Only an outage (:class:`~flts.exceptions.UnavailableError`,
or an error that is not ours, such as an unreachable tracking server) propagates, so the
evaluator waits it out and decides later instead of deciding on partial information.

The result is a :class:`~flts.promotion.decisions.Decision`; nothing here has side effects.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from flts.data.processed import ProcessedKeys, read_splits
from flts.data.windows import Windows
from flts.evaluation import Bands, Scores, StepScores, score
from flts.exceptions import DataValidationError, FLTSError, ModelError, UnavailableError
from flts.models.baselines import Persistence
from flts.models.intervals import check_levels
from flts.promotion.decisions import HEADLINE, Decision, HorizonFigures, LeaderboardEntry
from flts.promotion.gate import PromotionGate, ReasonCode, Verdict
from flts.promotion.pointer import Promotion

if TYPE_CHECKING:
    from flts.data.prepare import PreparedData
    from flts.models.base import Forecaster
    from flts.promotion.backends import Backends
    from flts.tracking import RunRecord

log = logging.getLogger(__name__)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _finite_map(values: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in values.items() if math.isfinite(value)}


def _headline(scores: Scores) -> dict[str, float | None]:
    return {name: _finite(getattr(scores, name)) for name in HEADLINE}


def _step_figures(step: StepScores) -> HorizonFigures:
    return HorizonFigures(
        nrmse=_finite(step.nrmse),
        mae5=_finite(step.mae5),
        rmse5=_finite(step.rmse5),
        mase=_finite(step.mase),
        wql=_finite(step.wql),
        coverage=_finite_map(step.coverage),
        width=_finite_map(step.width),
    )


def _horizon(scores: Scores) -> dict[int, HorizonFigures]:
    return {step: _step_figures(figures) for step, figures in scores.horizon_summary.items()}


def _entry_figures(scores: Scores) -> dict[str, Any]:
    """Everything a leaderboard line carries of a candidate's scores."""
    return {
        **_headline(scores),
        "mase": _finite(scores.mase),
        "wql": _finite(scores.wql),
        "coverage": _finite_map(scores.coverage),
        "width": _finite_map(scores.width),
        "horizon": _horizon(scores),
    }


def _recorded_scores(recorded: dict[str, float]) -> Scores:
    """A champion's recorded figures as :class:`Scores` (when it cannot be re-scored)."""
    return Scores(
        nrmse=recorded.get("nrmse", math.inf),
        mae5=recorded.get("mae5", math.inf),
        rmse5=recorded.get("rmse5", math.inf),
        per_target={},
        n_windows=0,
    )


def _unscorable(exc: Exception) -> bool:
    """Whether ``exc`` is a verdict on the model (unscored) rather than an outage to wait out."""
    return isinstance(exc, FLTSError) and not isinstance(exc, UnavailableError)


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


def _bands(
    model: Forecaster, test: Windows, prediction: np.ndarray, levels: tuple[float, ...]
) -> Bands:
    """The model's intervals around ``prediction``; none for a model saved without a
    calibration (it is still scored, without interval figures)."""
    if not levels:
        return {}
    try:
        return model.intervals(test, prediction, levels)
    except DataValidationError as exc:
        log.info("%s scored without intervals: %s", model.model_type, exc)
        return {}


@dataclass
class TestForecasts:
    """What the judge saw, for the evaluation report (:mod:`flts.promotion.report`): the
    test windows and each scored candidate's forecast of them, by run id. Filled only when
    the caller passes one to :meth:`Judge.decide`; the decision never depends on it."""

    windows: Windows | None = None
    targets: tuple[str, ...] = ()
    predictions: dict[str, np.ndarray] = field(default_factory=dict)


def _score_model(
    model: Forecaster,
    prepared: PreparedData,
    test: Windows,
    naive: np.ndarray,
    levels: tuple[float, ...],
    keep: dict[str, np.ndarray] | None = None,
    run_id: str | None = None,
) -> Scores:
    """Score ``model`` on ``test`` against the persistence forecast ``naive`` (its forecast
    kept in ``keep[run_id]`` when both are given)."""
    if model.spec != prepared.spec:
        raise ModelError(f"{model.model_type} was trained with a different feature spec")
    try:
        prediction = model.predict(test)
        bands = _bands(model, test, prediction, levels)
        if not np.all(np.isfinite(prediction)):
            raise ModelError(f"{model.model_type} predicted non-finite values")
        if keep is not None and run_id is not None:
            keep[run_id] = prediction
        return score(test.targets, prediction, prepared.spec.targets, baseline=naive, bands=bands)
    except FLTSError:
        raise
    except Exception as exc:  # whatever a model raises while predicting is its own failure
        raise ModelError(f"{model.model_type} cannot be scored: {exc}") from exc


class Judge:
    """Scores the candidates of a config hash and applies the gate (see module doc)."""

    def __init__(
        self,
        backends: Backends,
        gate: PromotionGate,
        *,
        interval_levels: tuple[float, ...] = (80.0, 95.0),
    ) -> None:
        self.backends = backends
        self.gate = gate
        self.policy = gate.policy
        self.levels = check_levels(interval_levels)

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
        forecasts: TestForecasts | None = None,
    ) -> Decision:
        """The decision for ``config_hash``: state ``promoting`` when it promotes (the
        promotion still to be carried out), else ``done``; ``forecasts``, when given, is
        filled with the test windows and every scored candidate's forecast."""
        store = self.backends.store
        prepared = read_splits(store, ProcessedKeys.for_hash(config_hash)).windows()
        test = prepared.test
        if test is None or len(test) == 0:
            raise DataValidationError(f"processed data {config_hash} has no test windows")
        persistence = Persistence(prepared.spec, prepared.input_scaler, prepared.target_scaler)
        persistence.fit(prepared.train, prepared.validation)  # nothing to learn but intervals
        naive = persistence.predict(test)
        score_model = functools.partial(
            _score_model, prepared=prepared, test=test, naive=naive, levels=self.levels
        )
        baseline = score_model(persistence)
        keep: dict[str, np.ndarray] | None = None
        if forecasts is not None:
            forecasts.windows, forecasts.targets = test, prepared.spec.targets
            keep = forecasts.predictions

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
                model = self.backends.tracker.load_model(run.run_id, run.artifact_digest)
                scores = score_model(model, keep=keep, run_id=run.run_id)
            except Exception as exc:
                if not _unscorable(exc):
                    raise
                log.warning("%s run %s is unscored: %s", model_type, run.run_id, exc)
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
        previous, champion_scores = self._champion(identifier, score_model, candidate_runs)
        ranking = self.policy.rank({m: s for m, (_, s) in scored.items()})
        entries: list[LeaderboardEntry] = []
        promotion: Promotion | None = None
        champion: dict[str, Any] | None = None
        verdict: Verdict | None = None  # of the promoted candidate, else of the best
        promoted_value = math.nan
        correlation_id = (runs[0].correlation_id or None) if runs else None
        for position, model_type in enumerate(ranking):
            run, scores = scored[model_type]
            if promotion is None:
                judged = self.gate.decide(scores, baseline, champion_scores)
                verdict = judged if verdict is None or judged.promote else verdict
                promoted, reason = judged.promote, judged.reason
            else:
                promoted = False
                reason = (
                    f"ranked {position + 1} of {len(ranking)}: {self.policy.metric} "
                    f"{self.policy.value(scores):.4f} vs promoted {promoted_value:.4f}"
                )
            entry = LeaderboardEntry(
                model_type=model_type,
                run_id=run.run_id,
                status="SUCCESS",
                train_seconds=run.train_seconds,
                promoted=promoted,
                reason=reason,
                **_entry_figures(scores),
            )
            entries.append(entry)
            if promoted:
                promoted_value = self.policy.value(scores)
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
                    artifact_digest=run.artifact_digest,
                )
                champion = {"run_id": run.run_id, "model_type": model_type, "nrmse": scores.nrmse}

        return Decision(
            identifier=identifier,
            config_hash=config_hash,
            state="promoting" if promotion is not None else "done",
            decided_at=now,
            reason_code=ReasonCode.NO_CANDIDATE if verdict is None else verdict.reason_code,
            correlation_id=correlation_id,
            deadline_passed=deadline_passed,
            expected_models=expected_models,
            missing_models=missing,
            test_windows=len(test),
            baseline=_headline(baseline),
            baseline_horizon=_horizon(baseline),
            interval_levels=list(self.levels),
            previous_champion=previous,
            leaderboard=entries + others,
            champion=champion,
            promotion=promotion,
        )

    def _champion(
        self,
        identifier: str,
        score_model: Callable[[Forecaster], Scores],
        scored: dict[str, Scores],
    ) -> tuple[dict[str, Any] | None, Scores | None]:
        """The current champion and its scores on these test windows when it can be
        re-scored (same feature spec), else its recorded scores."""
        current = self.backends.promotions.current(identifier)
        if current is None:
            return None, None
        rescored: Scores | None = scored.get(current.run_id)
        reason = ""
        if rescored is None:
            try:
                model = self.backends.tracker.load_model(current.run_id, current.artifact_digest)
                rescored = score_model(model)
            except Exception as exc:
                if not _unscorable(exc):
                    raise
                reason = f"not re-scored: {exc}"
                log.warning("champion %s %s; using its record", current.run_id, reason)
        scores = rescored if rescored is not None else _recorded_scores(current.scores)
        info = {
            "run_id": current.run_id,
            "model_type": current.model_type,
            "config_hash": current.config_hash,
            "nrmse": _finite(scores.nrmse),
            "rescored": rescored is not None,
        }
        if reason:
            info["reason"] = reason
        return info, scores
