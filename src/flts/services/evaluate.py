"""The evaluator: one decision per (identifier, config hash), made once, from durable state.

A thin state machine around :mod:`flts.promotion`. On every ``model-training`` SUCCESS or
FAILED it asks the *tracking store* (not its memory) which model types have a terminal run for
that config hash. When every expected type has reported, or ``deadline_seconds`` after the
first run of that hash started (:meth:`EvaluateService.check_deadlines`, called every few
seconds by the runner), the :class:`~flts.promotion.judge.Judge` scores the candidates and
applies the gate, and a promotion is carried out by :func:`flts.promotion.carry_out` (pointers,
history, registry alias ``champion``, ``model-selected``).

Durability (docs/architecture.md, rule 5): a restarted evaluator needs nothing but the stores.
A pending marker (:func:`flts.promotion.mark_pending`) lets :meth:`check_deadlines` find a hash
that reported but is not decided; the decision is written in state ``promoting`` *before* any
side effect and ``done`` after them, so a crash in between resumes the same promotion (each
step is idempotent) instead of deciding again, and a duplicate event or a late trainer finds
``done`` and changes nothing.

Several evaluators may run at once (a restarted one beside one that is not quite gone, two
replicas of the deployment): one writer per decision (docs/architecture.md, rule 13). A
decision is *created* conditionally, so of two evaluators judging one config hash exactly one
records its judgment and the other adopts the recorded one; the promotion's history entry is
created once (only its creator counts and logs the promotion) and the pointer is replaced by
compare-and-swap. If the champion changed between judging and writing (another config hash of
the identifier was promoted meanwhile, or an operator promoted), the pointer write is refused,
the decision is judged again against the new champion and replaced by compare-and-swap, and
the next tick carries it out. Inside one process a lock serialises the handler and the
deadline ticker.

MLflow is where people look (docs/operations.md): every decision's test metrics, a
forecast-vs-actual figure and the model card's evaluation part go onto the candidates' runs
(:mod:`flts.promotion.report`), and every ``evaluation.registry_sync_seconds`` the deadline
tick also checks the registry: a ``champion`` alias moved by hand to a trained run of the
identifier is promoted like ``flts promote`` (caller ``mlflow-registry``), any other move is
refused with its reason and the alias put back (:func:`flts.promotion.follow_registry_alias`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from flts.events import MODEL_TRAINING, Event, ModelTrainingEvent, TrainingStatus
from flts.exceptions import ConfigurationError, ConflictError, DataValidationError
from flts.promotion import (
    Decision,
    Promotion,
    PromotionGate,
    carry_out,
    clear_pending,
    create_decision,
    first_seen,
    follow_registry_alias,
    mark_pending,
    pending,
    read_decision,
    read_versioned_decision,
    replace_decision,
    selected_event_id,
    write_decision,
)
from flts.promotion.judge import Judge, TestForecasts
from flts.promotion.registry import unconfirmed_aliases
from flts.promotion.report import report_decision
from flts.services.context import ServiceContext
from flts.services.metrics import worker_metrics

if TYPE_CHECKING:
    from flts.tracking import RunRecord

log = logging.getLogger(__name__)

#: Share of ``deadline_seconds`` the deadline pass leaves a still-waiting hash alone.
REVISIT_SHARE = 0.1


class EvaluateService:
    """Decides each config hash once it is due and carries out its promotion (see module doc)."""

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
        gate = PromotionGate(
            baseline_margin=self.settings.baseline_margin,
            champion_margin=self.settings.champion_margin,
        )
        self.judge = Judge(context, gate, interval_levels=self.settings.interval_levels)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._last_sync = -math.inf
        # Pending hashes found still waiting for models, and when (on the clock) the deadline
        # pass looks at them again: their reports reach handle() anyway, so the pass only has
        # a deadline to catch, and a fleet's backlog is not searched in MLflow every tick.
        self._quiet_until: dict[tuple[str, str], datetime] = {}

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
            mark_pending(self.context.store, event.identifier, event.config_hash, self._clock())
            self._consider(event.identifier, event.config_hash)

    def check_deadlines(self) -> list[Decision]:
        """Decide every pending config hash whose deadline has passed (or whose last model
        reported while no event reached us); return the decisions made now."""
        made: list[Decision] = []
        with self._lock:
            marked = pending(self.context.store)
            now = self._clock()
            keep = set(marked)
            self._quiet_until = {k: v for k, v in self._quiet_until.items() if k in keep}
            for identifier, config_hash in marked:
                quiet = self._quiet_until.get((identifier, config_hash))
                if quiet is not None and quiet > now:
                    continue
                try:
                    decision = self._consider(identifier, config_hash)
                except Exception:  # one broken hash must not block the others
                    log.exception(
                        "evaluating %s/%s failed; retrying at the next tick",
                        identifier,
                        config_hash,
                    )
                    continue
                if decision is not None:
                    made.append(decision)
                elif read_decision(self.context.store, identifier, config_hash) is None:
                    # Still waiting: look again after a tenth of the deadline (so a deadline
                    # decision comes at most that late), earlier events permitting.
                    revisit = timedelta(seconds=self.settings.deadline_seconds * REVISIT_SHARE)
                    self._quiet_until[(identifier, config_hash)] = now + revisit
        self._sync_registry_when_due()
        return made

    def sync_registry(self) -> list[Promotion]:
        """Honour ``champion`` aliases moved by hand in the MLflow registry, one identifier
        at a time (:func:`flts.promotion.follow_registry_alias`); return the promotions."""
        made: list[Promotion] = []
        with self._lock:
            for identifier in unconfirmed_aliases(self.context.tracker):
                try:
                    promotion = follow_registry_alias(self.context, identifier)
                except Exception:  # one identifier must not block the others
                    log.exception("following the registry alias of %s failed", identifier)
                    continue
                if promotion is not None:
                    made.append(promotion)
        return made

    def _sync_registry_when_due(self) -> None:
        every = self.settings.registry_sync_seconds
        now = time.monotonic()
        if every <= 0 or now - self._last_sync < every:
            return
        self._last_sync = now
        self.sync_registry()

    def decision(self, identifier: str, config_hash: str) -> Decision | None:
        """The stored decision for a config hash, if any."""
        document = read_decision(self.context.store, identifier, config_hash)
        return None if document is None else Decision.model_validate(document)

    # ------------------------------------------------------------------ state machine

    def _consider(self, identifier: str, config_hash: str) -> Decision | None:
        """Decide (or finish deciding) one config hash if it is due; ``None`` otherwise."""
        stored = read_versioned_decision(self.context.store, identifier, config_hash)
        if stored is not None:
            existing, tag = stored
            if existing.state == "promoting":
                return self._apply(existing, tag)  # a crash interrupted the promotion: finish it
            clear_pending(self.context.store, identifier, config_hash)
            return None
        decision = self._judge(identifier, config_hash)
        if decision is None:
            return None
        # The intent first, created once: a crash resumes it, a second evaluator adopts it.
        if not create_decision(self.context.store, decision):
            log.info(
                "%s/%s: another evaluator decided first; adopting its decision",
                identifier,
                config_hash[:12],
            )
            return self._consider(identifier, config_hash)
        if decision.state == "promoting":
            stored = read_versioned_decision(self.context.store, identifier, config_hash)
            if stored is None:  # removed by an operator in between: nothing to carry out
                return None
            return self._apply(*stored)
        clear_pending(self.context.store, identifier, config_hash)
        self._rejected(decision)
        return decision

    def _judge(self, identifier: str, config_hash: str) -> Decision | None:
        """The judge's decision for a config hash that is due, ``None`` while it is not."""
        runs = self.context.tracker.runs_for(config_hash=config_hash, identifier=identifier)
        reported = {r.model_type for r in runs if r.terminal}
        missing = [m for m in self.settings.expected_models if m not in reported]
        deadline_passed = False
        if missing:
            elapsed = self._clock() - self._started(identifier, config_hash, runs)
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
        forecasts = TestForecasts()
        decision = self.judge.decide(
            identifier,
            config_hash,
            runs,
            expected_models=list(self.settings.expected_models),
            missing=missing,
            deadline_passed=deadline_passed,
            now=self._clock(),
            forecasts=forecasts,
        )
        # Before the decision is recorded, so an outage here is waited out and the report
        # written on the retry; repeating it writes the same values (flts.promotion.report).
        report_decision(self.context, decision, forecasts, figures=self.settings.log_figures)
        return decision

    def _started(self, identifier: str, config_hash: str, runs: list[RunRecord]) -> datetime:
        """When the deadline clock started: the first run of the hash, else the first report."""
        if runs:
            return min(r.start_time for r in runs)
        return first_seen(self.context.store, identifier, config_hash) or self._clock()

    def _finish(self, decision: Decision) -> None:
        """Store the final decision, then drop the pending marker (in that order, so a crash
        between the two leaves a marker that the next tick simply clears)."""
        write_decision(self.context.store, decision)
        clear_pending(self.context.store, decision.identifier, decision.config_hash)

    def _apply(self, decision: Decision, tag: str) -> Decision | None:
        """Carry out a recorded promotion (version ``tag`` of the decision); every step is
        safe to repeat. ``None`` when the champion changed under it: the decision is judged
        again and the next tick carries out the new one."""
        if decision.promotion is None:
            raise ConfigurationError(
                f"decision {decision.identifier}/{decision.config_hash} has no promotion"
            )
        try:
            recorded = carry_out(
                self.context,
                decision.promotion,
                correlation_id=decision.correlation_id,
                event_id=selected_event_id(decision.promotion),
            )
        except ConflictError as exc:
            self._rejudge(decision, tag, exc)
            return None
        done = decision.model_copy(update={"state": "done"})
        self._finish(done)
        promotion = recorded.promotion
        if not recorded.created:
            log.info(
                "%s/%s: promotion of run %s was already recorded; finished it",
                promotion.identifier,
                promotion.config_hash[:12],
                promotion.run_id,
            )
            return done
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

    def _rejudge(self, decision: Decision, tag: str, conflict: ConflictError) -> None:
        """The champion moved on since ``decision`` was judged: judge again against the new
        one and replace the stored decision if nobody else did so first."""
        log.warning(
            "%s/%s: %s; judging again",
            decision.identifier,
            decision.config_hash[:12],
            conflict,
        )
        fresh = self._judge(decision.identifier, decision.config_hash)
        replaced = fresh is not None and replace_decision(self.context.store, fresh, tag)
        if fresh is not None and replaced and fresh.state == "done":
            clear_pending(self.context.store, fresh.identifier, fresh.config_hash)
            self._rejected(fresh)

    def _rejected(self, decision: Decision) -> None:
        """Count and log a decision that promoted nothing, by its reason code."""
        code = decision.reason_code
        if code is not None:  # always set by the judge; ``None`` only in old records
            worker_metrics().rejections.labels(decision.identifier, code.value).inc()
        top = decision.leaderboard[0] if decision.leaderboard else None
        log.info(
            "%s/%s: nothing promoted, %s (%s)",
            decision.identifier,
            decision.config_hash[:12],
            code,
            top.reason if top is not None else "no candidate",
            extra={
                "event": "promotion-rejected",
                "identifier": decision.identifier,
                "config_hash": decision.config_hash,
                "correlation_id": decision.correlation_id,
                "model_type": top.model_type if top is not None else None,
                "run_id": top.run_id if top is not None else None,
            },
        )
