"""The evaluator: one decision per (identifier, config hash), made once, from durable state.

On every ``model-training`` SUCCESS or FAILED it asks the *tracking store* (not its memory)
which model types have a terminal run for that config hash. When every expected type has
reported, or ``deadline_seconds`` after the first run of that hash started
(:meth:`EvaluateService.check_deadlines`, called every few seconds by the runner), it

1. loads the processed test split and windows it (original units);
2. scores every candidate that logged a model *itself*, on those windows, with
   :func:`flts.evaluation.score` (trainer-reported metrics are never read for ranking);
3. scores the persistence baseline in-process on the same windows, and re-scores the current
   champion of the identifier on them when its feature spec matches (else uses its recorded
   scores);
4. applies :class:`~flts.evaluation.PromotionGate` to the best candidate;
5. on promotion writes the pointers and history, moves the registry alias ``champion`` and
   publishes ``model-selected``.

Durability (DESIGN.md rule 5). A restarted evaluator needs nothing but the stores:

* ``evaluations-pending/<identifier>/<config_hash>.json`` marks a hash that has reported but is
  not decided, so :meth:`check_deadlines` finds it after a restart;
* ``evaluations/<identifier>/<config_hash>.json`` is the decision and leaderboard. It is written
  in state ``promoting`` *before* any side effect and ``done`` after them, so a crash in between
  resumes the same promotion (each step is idempotent) instead of deciding again, and a
  duplicate event or a late trainer finds ``done`` and changes nothing.

One evaluator process per deployment: the ``evaluate`` consumer group already gives each
event to one consumer, and a lock serialises the handler and the deadline ticker inside it.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flts.data.prepare import PreparedData
from flts.data.processed import ProcessedKeys, read_splits
from flts.data.windows import Windows
from flts.evaluation import PromotionGate, Scores, ScoringPolicy, score
from flts.events import (
    MODEL_SELECTED,
    MODEL_TRAINING,
    Event,
    ModelSelected,
    ModelTrainingEvent,
    TrainingStatus,
    new_event,
)
from flts.exceptions import ConfigurationError, DataValidationError, ModelError
from flts.models.baselines import Persistence
from flts.promotion import Promotion
from flts.services.context import ServiceContext
from flts.services.metrics import rejection_reason, worker_metrics
from flts.storage import ObjectStore

if TYPE_CHECKING:
    from flts.models.base import Forecaster
    from flts.tracking import RunRecord

log = logging.getLogger(__name__)

DECISIONS_ROOT = "evaluations"
PENDING_ROOT = "evaluations-pending"
#: Figures copied into the pointer, the event and the leaderboard.
HEADLINE = ("nrmse", "mae5", "rmse5")
_EVENT_NAMESPACE = uuid.UUID("5f0b6f0e-4d0c-4bb4-9d43-3c1f5b8e7a10")


# ----------------------------------------------------------------------------- records


class LeaderboardEntry(BaseModel):
    """One model type's line in a decision (scores are the evaluator's, on the test split)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    run_id: str | None = None
    status: Literal["SUCCESS", "FAILED", "MISSING", "UNSCORED"]
    nrmse: float | None = None
    mae5: float | None = None
    rmse5: float | None = None
    train_seconds: float | None = None
    promoted: bool = False
    reason: str = ""


class Decision(BaseModel):
    """What the evaluator decided for one config hash (``evaluations/<id>/<hash>.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identifier: str
    config_hash: str
    state: Literal["promoting", "done"]
    decided_at: AwareDatetime
    correlation_id: str | None = None
    deadline_passed: bool = False
    expected_models: list[str] = Field(default_factory=list)
    missing_models: list[str] = Field(default_factory=list)
    test_windows: int = 0
    baseline: dict[str, float | None] = Field(default_factory=dict)
    previous_champion: dict[str, Any] | None = None
    """The champion before this decision: run_id, model_type, nrmse, rescored (bool)."""
    leaderboard: list[LeaderboardEntry] = Field(default_factory=list)
    """Best first: scored candidates by the policy metric, then unscored, failed, missing."""
    champion: dict[str, Any] | None = None
    """The model this decision promoted (run_id, model_type, nrmse), or ``None``."""
    promotion: Promotion | None = None


def decision_key(identifier: str, config_hash: str) -> str:
    return f"{DECISIONS_ROOT}/{identifier}/{config_hash}.json"


def pending_key(identifier: str, config_hash: str) -> str:
    return f"{PENDING_ROOT}/{identifier}/{config_hash}.json"


def read_decision(store: ObjectStore, identifier: str, config_hash: str) -> dict[str, Any] | None:
    """The decision document for a config hash (plain JSON, as the CLI prints it), or ``None``
    while the evaluator is still waiting."""
    try:
        document: dict[str, Any] = store.get_json(decision_key(identifier, config_hash))
    except KeyError:
        return None
    return document


def list_decisions(store: ObjectStore, identifier: str | None = None) -> list[dict[str, Any]]:
    """Decision documents for one identifier (or all), oldest decision first."""
    prefix = DECISIONS_ROOT if identifier is None else f"{DECISIONS_ROOT}/{identifier}"
    documents: list[dict[str, Any]] = []
    for key in store.list(prefix):
        if key.endswith(".json"):
            try:
                documents.append(store.get_json(key))
            except KeyError:  # removed while listing
                continue
    return sorted(documents, key=lambda d: str(d.get("decided_at", "")))


# ----------------------------------------------------------------------------- helpers


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


def _event_id(promotion: Promotion) -> str:
    """Deterministic id of a promotion's ``model-selected`` event: a resumed promotion
    re-publishes the same id, which idempotent consumers drop."""
    stamp = promotion.promoted_at.isoformat()
    name = f"{promotion.identifier}/{promotion.config_hash}/{promotion.run_id}/{stamp}"
    return str(uuid.uuid5(_EVENT_NAMESPACE, name))


def announce(
    context: ServiceContext,
    promotion: Promotion,
    *,
    correlation_id: str | None = None,
    event_id: str | None = None,
) -> None:
    """Tell the world about a recorded promotion: registry alias ``champion`` first (so a
    replica reacting to the event finds the registry consistent), then ``model-selected``."""
    context.tracker.set_champion(promotion.run_id, promotion.identifier)
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
    context.bus.publish(MODEL_SELECTED, event)


# ----------------------------------------------------------------------------- service


class EvaluateService:
    """Scores candidates on the held-out test split and promotes the best (see module doc)."""

    topics: ClassVar[tuple[str, ...]] = (MODEL_TRAINING,)
    group: ClassVar[str] = "evaluate"

    def __init__(
        self,
        context: ServiceContext,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """``clock`` (UTC now) is injectable so deadline tests need no sleeping."""
        self.context = context
        self.settings = context.settings.evaluation
        self.policy = ScoringPolicy()
        self.gate = PromotionGate(
            policy=self.policy,
            baseline_margin=self.settings.baseline_margin,
            champion_margin=self.settings.champion_margin,
        )
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ entry points

    def handle(self, event: Event) -> None:
        """React to a trainer's report: decide if the config hash is now complete."""
        if not isinstance(event, ModelTrainingEvent):
            raise DataValidationError(f"{self.group} consumes {MODEL_TRAINING}, got {event.type}")
        if event.payload.status is TrainingStatus.RUNNING:
            return
        if event.config_hash is None:
            raise DataValidationError("a model-training report without config_hash")
        with self._lock:
            self._mark_pending(event.identifier, event.config_hash)
            self._consider(event.identifier, event.config_hash)

    def check_deadlines(self) -> list[Decision]:
        """Decide every pending config hash whose deadline has passed (or whose last model
        reported while no event reached us); return the decisions made now."""
        made: list[Decision] = []
        with self._lock:
            for key in list(self.context.store.list(PENDING_ROOT)):
                parts = key.removesuffix(".json").split("/")
                if len(parts) != 3:
                    continue
                try:
                    decision = self._consider(parts[1], parts[2])
                except Exception:  # one broken hash must not block the others
                    log.exception("evaluating %s failed; retrying at the next tick", key)
                    continue
                if decision is not None:
                    made.append(decision)
        return made

    def decision(self, identifier: str, config_hash: str) -> Decision | None:
        """The stored decision for a config hash, if any."""
        document = read_decision(self.context.store, identifier, config_hash)
        return None if document is None else Decision.model_validate(document)

    # ------------------------------------------------------------------ state machine

    def _mark_pending(self, identifier: str, config_hash: str) -> None:
        key = pending_key(identifier, config_hash)
        store = self.context.store
        if not store.exists(key) and not store.exists(decision_key(identifier, config_hash)):
            store.put_json(
                key,
                {
                    "identifier": identifier,
                    "config_hash": config_hash,
                    "first_seen": self._clock().isoformat(),
                },
            )

    def _consider(self, identifier: str, config_hash: str) -> Decision | None:
        """Decide (or finish deciding) one config hash if it is due; ``None`` otherwise."""
        existing = self.decision(identifier, config_hash)
        if existing is not None:
            if existing.state == "promoting":
                return self._apply(existing)  # a crash interrupted the promotion: finish it
            self.context.store.delete(pending_key(identifier, config_hash))
            return None
        runs = self.context.tracker.runs_for(config_hash=config_hash, identifier=identifier)
        reported = {r.model_type for r in runs if r.terminal}
        missing = [m for m in self.settings.expected_models if m not in reported]
        deadline_passed = False
        if missing:
            started = self._started(identifier, config_hash, runs)
            elapsed = self._clock() - started
            if elapsed < timedelta(seconds=self.settings.deadline_seconds):
                log.info(
                    "%s/%s: waiting for %s (%.0fs of %.0fs)",
                    identifier,
                    config_hash[:12],
                    ", ".join(missing),
                    elapsed.total_seconds(),
                    self.settings.deadline_seconds,
                )
                return None
            deadline_passed = True
            log.info("%s/%s: deadline passed without %s", identifier, config_hash[:12], missing)
        decision = self._decide(identifier, config_hash, runs, missing, deadline_passed)
        if decision.state == "promoting":
            self._write(decision)  # the intent first: a crash from here on resumes it
            return self._apply(decision)
        self._finish(decision)
        top = decision.leaderboard[0] if decision.leaderboard else None
        reason = rejection_reason(top.reason if top is not None and top.status == "SUCCESS" else "")
        worker_metrics().rejections.labels(identifier, reason).inc()
        log.info(
            "%s/%s: nothing promoted (%s)",
            identifier,
            config_hash[:12],
            top.reason if top is not None else "no candidate",
            extra={
                "event": "promotion-rejected",
                "identifier": identifier,
                "config_hash": config_hash,
                "correlation_id": decision.correlation_id,
                "model_type": top.model_type if top is not None else None,
                "run_id": top.run_id if top is not None else None,
            },
        )
        return decision

    def _started(self, identifier: str, config_hash: str, runs: list[RunRecord]) -> datetime:
        """When the deadline clock started: the first run of the hash, else the first report."""
        if runs:
            return min(r.start_time for r in runs)
        try:
            marker = self.context.store.get_json(pending_key(identifier, config_hash))
            return datetime.fromisoformat(marker["first_seen"])
        except (KeyError, ValueError):
            return self._clock()

    def _write(self, decision: Decision) -> None:
        self.context.store.put_json(
            decision_key(decision.identifier, decision.config_hash),
            decision.model_dump(mode="json"),
            atomic=True,
        )

    def _finish(self, decision: Decision) -> None:
        """Store the final decision, then drop the pending marker (in that order, so a crash
        between the two leaves a marker that the next tick simply clears)."""
        self._write(decision)
        self.context.store.delete(pending_key(decision.identifier, decision.config_hash))

    def _apply(self, decision: Decision) -> Decision:
        """Carry out a recorded promotion; every step is safe to repeat."""
        promotion = decision.promotion
        if promotion is None:
            raise ConfigurationError(
                f"decision {decision.identifier}/{decision.config_hash} has no promotion"
            )
        promotions = self.context.promotions
        already = any(
            entry.run_id == promotion.run_id and entry.promoted_at == promotion.promoted_at
            for entry in promotions.history(promotion.identifier)
        )
        if not already:
            promotions.record(promotion)
        announce(
            self.context,
            promotion,
            correlation_id=decision.correlation_id,
            event_id=_event_id(promotion),
        )
        done = decision.model_copy(update={"state": "done"})
        self._finish(done)
        metrics = worker_metrics()
        metrics.promotions.labels(promotion.identifier, promotion.model_type).inc()
        metrics.last_promotion.labels(promotion.identifier).set(promotion.promoted_at.timestamp())
        log.info(
            "%s: promoted %s run %s (%s)",
            promotion.identifier,
            promotion.model_type,
            promotion.run_id,
            promotion.reason,
            extra={
                "event": "promoted",
                "identifier": promotion.identifier,
                "config_hash": promotion.config_hash,
                "correlation_id": decision.correlation_id,
                "model_type": promotion.model_type,
                "run_id": promotion.run_id,
            },
        )
        return done

    # ------------------------------------------------------------------ scoring

    def _decide(
        self,
        identifier: str,
        config_hash: str,
        runs: list[RunRecord],
        missing: list[str],
        deadline_passed: bool,
    ) -> Decision:
        """Score everything on the test windows and apply the gate (no side effects)."""
        prepared = read_splits(self.context.store, ProcessedKeys.for_hash(config_hash)).windows()
        test = prepared.test
        if test is None or len(test) == 0:
            raise DataValidationError(f"processed data {config_hash} has no test windows")
        baseline = self._score_baseline(prepared, test)

        scored: dict[str, tuple[RunRecord, Scores]] = {}
        others: list[LeaderboardEntry] = []
        for model_type, run in self._candidates(runs).items():
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
        entries: list[LeaderboardEntry] = []
        promotion: Promotion | None = None
        champion: dict[str, Any] | None = None
        correlation_id = (runs[0].correlation_id or None) if runs else None
        metric = self.policy.metric
        for position, model_type in enumerate(ranking):
            run, scores = scored[model_type]
            if position == 0:
                verdict = self.gate.decide(scores, baseline, champion_scores)
                promoted, reason = verdict.promote, verdict.reason
            else:
                best = self.policy.value(scored[ranking[0]][1])
                promoted = False
                reason = (
                    f"ranked {position + 1} of {len(ranking)}: {metric} "
                    f"{self.policy.value(scores):.4f} vs best {best:.4f}"
                )
            entries.append(
                LeaderboardEntry(
                    model_type=model_type,
                    run_id=run.run_id,
                    status="SUCCESS",
                    train_seconds=run.train_seconds,
                    promoted=promoted,
                    reason=reason,
                    **_headline(scores),
                )
            )
            if promoted:
                correlation_id = run.correlation_id or correlation_id
                figures = {k: v for k, v in _headline(scores).items() if v is not None}
                promotion = Promotion(
                    run_id=run.run_id,
                    model_type=model_type,
                    config_hash=config_hash,
                    identifier=identifier,
                    scores=figures,
                    promoted_at=self._clock(),
                    previous_run_id=None if previous is None else previous["run_id"],
                    reason=reason,
                )
                champion = {"run_id": run.run_id, "model_type": model_type, "nrmse": scores.nrmse}

        return Decision(
            identifier=identifier,
            config_hash=config_hash,
            state="promoting" if promotion is not None else "done",
            decided_at=self._clock(),
            correlation_id=correlation_id,
            deadline_passed=deadline_passed,
            expected_models=list(self.settings.expected_models),
            missing_models=missing,
            test_windows=len(test),
            baseline=_headline(baseline),
            previous_champion=previous,
            leaderboard=entries + others,
            champion=champion,
            promotion=promotion,
        )

    @staticmethod
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

    def _score_baseline(self, prepared: PreparedData, test: Windows) -> Scores:
        """Persistence on the same windows, computed here (it needs no training)."""
        baseline = Persistence(prepared.spec, prepared.input_scaler, prepared.target_scaler)
        baseline.fit(prepared.train, prepared.validation)
        return score(test.targets, baseline.predict(test), prepared.spec.targets)

    def _score_model(self, model: Forecaster, prepared: PreparedData, test: Windows) -> Scores:
        if model.spec != prepared.spec:
            raise ModelError(f"{model.model_type} was trained with a different feature spec")
        try:
            prediction = model.predict(test)
        except (ValueError, RuntimeError, ArithmeticError) as exc:  # the model's own failure
            raise ModelError(f"{model.model_type} cannot predict: {exc}") from exc
        if not np.all(np.isfinite(prediction)):
            raise ModelError(f"{model.model_type} predicted non-finite values")
        return score(test.targets, prediction, prepared.spec.targets)

    def _score_run(self, run_id: str, prepared: PreparedData, test: Windows) -> Scores:
        return self._score_model(self.context.tracker.load_model(run_id), prepared, test)

    def _champion(
        self,
        identifier: str,
        prepared: PreparedData,
        test: Windows,
        candidates: dict[str, Scores],
    ) -> tuple[dict[str, Any] | None, Scores | None]:
        """The current champion and its scores on these test windows when it can be
        re-scored (same feature spec), else its recorded scores."""
        current = self.context.promotions.current(identifier)
        if current is None:
            return None, None
        rescored: Scores | None = candidates.get(current.run_id)
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


# ----------------------------------------------------------------------------- manual ops


def promote_run(
    context: ServiceContext,
    run_id: str,
    *,
    reason: str = "manual promotion",
    action: Literal["promote", "rollback", "manual"] = "manual",
) -> Promotion:
    """Make a finished run the champion of its identifier (``flts promote``), recorded in the
    history like an automatic promotion; scores come from its evaluation when there was one."""
    run = context.tracker.get_run(run_id)
    if run is None:
        raise ConfigurationError(f"no tracking run {run_id!r}")
    if not run.finished:
        raise ConfigurationError(f"run {run_id} is {run.status}, not a trained model")
    scores: dict[str, float] = {}
    document = read_decision(context.store, run.identifier, run.config_hash)
    if document is not None:
        for entry in Decision.model_validate(document).leaderboard:
            if entry.run_id == run_id:
                figures = {name: getattr(entry, name) for name in HEADLINE}
                scores = {k: float(v) for k, v in figures.items() if v is not None}
    current = context.promotions.current(run.identifier)
    promotion = context.promotions.record(
        Promotion(
            run_id=run_id,
            model_type=run.model_type,
            config_hash=run.config_hash,
            identifier=run.identifier,
            scores=scores,
            previous_run_id=None if current is None else current.run_id,
            reason=reason,
            action=action,
        )
    )
    announce(context, promotion, correlation_id=run.correlation_id or None)
    return promotion


def rollback_champion(
    context: ServiceContext, identifier: str = "global", *, reason: str = "manual rollback"
) -> Promotion:
    """Restore the previous valid champion (``flts rollback``) and announce it."""
    promotion = context.promotions.rollback(identifier, reason=reason)
    announce(context, promotion)
    return promotion
