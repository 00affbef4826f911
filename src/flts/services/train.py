"""The trainer: one model type per process, trained on each ``training-data`` claim check.

Each model type consumes ``training-data`` in its own consumer group (``train-lstm``,
``train-ridge``, ...), so every type sees every dataset and the types train in parallel.
For one event the trainer

1. republishes SUCCESS for an existing finished run of its type on this config hash and
   identifier, and stops there (a redelivered or duplicated event never trains twice: the
   tracking store, not memory, says what was already done);
2. publishes ``model-training`` RUNNING;
3. reads the processed splits named by the claim check, builds windows within each split, fits
   ``model_class(model_type)(spec, input_scaler, target_scaler, seed=0)`` with the chronological
   validation split for early stopping;
4. logs the run (params, validation metrics, per-epoch curves, the saved model directory as an
   MLflow Model), registers it as a version whose description is the model card
   (:mod:`flts.model_card`) and publishes SUCCESS
   with the run id; if the *model* fails (fit, predict or save raise) it logs a FAILED run and
   publishes FAILED with the error instead of raising, because retrying a deterministic model
   failure only delays the evaluator. Infrastructure errors (store, tracking) do raise, so the
   bus retries them and finally dead-letters the event.

The validation scores logged here are informational; the evaluator ranks candidates on the
held-out test split with its own computation (docs/architecture.md, rule 3).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from flts.data.prepare import PreparedData, Splits
from flts.data.processed import ProcessedKeys, read_splits
from flts.evaluation import Scores, score
from flts.events import (
    MODEL_TRAINING,
    TRAINING_DATA,
    Event,
    ModelTraining,
    TrainingData,
    TrainingDataEvent,
    TrainingStatus,
    new_event,
)
from flts.exceptions import ConfigurationError, DataValidationError, ModelError
from flts.model_card import TrainingFacts, training_card
from flts.models.registry import model_class
from flts.services.context import ServiceContext
from flts.services.metrics import worker_metrics

if TYPE_CHECKING:
    from flts.models.base import Forecaster
    from flts.tracking import RunRecord

log = logging.getLogger(__name__)

#: Seed every trainer uses, so a config hash reproduces the same models.
TRAINING_SEED = 0
_MAX_ERROR_CHARS = 4000


def processed_keys(payload: TrainingData) -> ProcessedKeys:
    """The claim check's keys as :class:`ProcessedKeys` (the recipe and config documents sit
    next to the splits, under the same prefix)."""
    prefix = payload.processed_prefix.rstrip("/")
    return ProcessedKeys(
        config_hash=payload.config_hash,
        prefix=prefix,
        train_key=payload.train_key,
        validation_key=payload.validation_key,
        test_key=payload.test_key,
        scaler_key=payload.scaler_key,
        feature_spec_key=payload.feature_spec_key,
        recipe_key=f"{prefix}/recipe.json",
        config_key=f"{prefix}/config.json",
        meta_key=payload.meta_key,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:_MAX_ERROR_CHARS]


class TrainService:
    """Train one model type on every ``training-data`` event."""

    topics: ClassVar[tuple[str, ...]] = (TRAINING_DATA,)

    def __init__(
        self,
        context: ServiceContext,
        model_type: str | None = None,
        *,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Fail here, at start-up, on a missing or unknown model type, a missing optional
        dependency (torch, prophet) or unknown model parameters (docs/architecture.md, rule 10)."""
        chosen = model_type or context.settings.training.model_type
        if not chosen:
            raise ConfigurationError(
                "a trainer needs a model type: pass --model or set FLTS_MODEL_TYPE"
            )
        self.model_class = model_class(chosen)  # ConfigurationError / DependencyMissingError
        self.model_type = self.model_class.model_type
        self.params: dict[str, Any] = dict(params or {})
        unknown = sorted(set(self.params) - set(self.model_class.default_params))
        if unknown:
            raise ConfigurationError(
                f"{self.model_type} does not accept parameters {unknown}; "
                f"known: {sorted(self.model_class.default_params)}"
            )
        self.context = context
        self.group = f"train-{self.model_type.lower()}"

    # ------------------------------------------------------------------ handler

    def handle(self, event: Event) -> None:
        """Train (or re-announce) this model type for one claim check; see the module doc."""
        if not isinstance(event, TrainingDataEvent):
            raise DataValidationError(
                f"{self.group} consumes {TRAINING_DATA} events, got {event.type}"
            )
        try:
            self._handle(event)
        except Exception:
            # Store or tracking trouble: the bus retries, then dead-letters the event.
            worker_metrics().training_failures.labels(self.model_type, "infrastructure").inc()
            raise

    def _handle(self, event: TrainingDataEvent) -> None:
        payload = event.payload
        identifier = event.identifier
        context = self._log_context(event)
        done = self._finished_run(payload.config_hash, identifier)
        if done is not None:
            log.info(
                "%s already trained on %s/%s (run %s): re-announcing",
                self.model_type,
                identifier,
                payload.config_hash,
                done.run_id,
                extra={**context, "event": "training-skipped", "run_id": done.run_id},
            )
            self._publish(
                event, TrainingStatus.SUCCESS, run_id=done.run_id, train_seconds=done.train_seconds
            )
            return

        self._publish(event, TrainingStatus.RUNNING)
        log.info(
            "%s training started", self.model_type, extra={**context, "event": "training-started"}
        )
        started = time.perf_counter()
        keys = processed_keys(payload)
        splits = read_splits(self.context.store, keys)
        prepared = splits.windows()
        try:
            model, validation = self._fit(prepared)
        except Exception as exc:  # only model code runs in _fit: any error is the model's
            self._report_failure(event, exc)
            return
        run_id = self._log_run(event, model, splits, prepared, validation)
        if run_id is None:
            return
        seconds = model.metadata.get("train_seconds")
        elapsed = time.perf_counter() - started
        worker_metrics().training_duration.labels(self.model_type).observe(elapsed)
        log.info(
            "%s trained in %.2fs (run %s)",
            self.model_type,
            elapsed,
            run_id,
            extra={**context, "event": "training-succeeded", "run_id": run_id},
        )
        self._publish(
            event,
            TrainingStatus.SUCCESS,
            run_id=run_id,
            train_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        )

    def _log_run(
        self,
        event: TrainingDataEvent,
        model: Forecaster,
        splits: Splits,
        prepared: PreparedData,
        validation: Scores,
    ) -> str | None:
        """Log ``model`` as this event's run with its model card; the run id, or ``None``
        after reporting FAILED when the model cannot be saved (tracking errors propagate)."""
        payload = event.payload
        identifier = event.identifier
        meta = self.context.store.get_json(processed_keys(payload).meta_key)
        current = self.context.promotions.current(identifier)

        def describe(run_id: str) -> str:
            facts = TrainingFacts(
                run_id=run_id,
                identifier=identifier,
                config_hash=payload.config_hash,
                correlation_id=event.correlation_id,
                input_digests={str(k): str(v) for k, v in meta.get("input_digests", {}).items()},
                parent_run_id=None if current is None else current.run_id,
            )
            return training_card(facts, model, splits, validation)

        try:
            return self.context.tracker.log_training_run(
                model,
                identifier=identifier,
                config_hash=payload.config_hash,
                correlation_id=event.correlation_id,
                validation=validation,
                example=prepared.validation,
                describe=describe,
            )
        except ModelError as exc:  # the model could not be saved (tracking errors propagate)
            self._report_failure(event, exc)
            return None

    # ------------------------------------------------------------------ helpers

    def _log_context(self, event: TrainingDataEvent) -> dict[str, str]:
        """The structured-log fields every trainer line carries (:mod:`flts.logs`)."""
        return {
            "correlation_id": event.correlation_id,
            "config_hash": event.payload.config_hash,
            "model_type": self.model_type,
            "identifier": event.identifier,
        }

    def _finished_run(self, config_hash: str, identifier: str) -> RunRecord | None:
        """The oldest finished run of this type for the config (the one everyone uses)."""
        runs = self.context.tracker.runs_for(config_hash=config_hash, identifier=identifier)
        return next((r for r in runs if r.finished and r.model_type == self.model_type), None)

    def _fit(self, prepared: PreparedData) -> tuple[Forecaster, Scores]:
        """Fit on train (validation for early stopping only) and score validation for the
        run's informational metrics."""
        model = self.model_class(
            prepared.spec,
            prepared.input_scaler,
            prepared.target_scaler,
            seed=TRAINING_SEED,
            **self.params,
        )
        model.fit(prepared.train, prepared.validation)
        prediction = model.predict(prepared.validation)
        validation = score(prepared.validation.targets, prediction, prepared.spec.targets)
        return model, validation

    def _report_failure(self, event: TrainingDataEvent, exc: Exception) -> None:
        """Record a FAILED run and announce it, so the evaluator stops waiting for this type."""
        error = _one_line(exc)
        worker_metrics().training_failures.labels(self.model_type, "model").inc()
        log.warning(
            "%s failed on %s: %s",
            self.model_type,
            event.payload.config_hash,
            error,
            extra={**self._log_context(event), "event": "training-failed"},
        )
        run_id = self.context.tracker.log_failed_run(
            model_type=self.model_type,
            identifier=event.identifier,
            config_hash=event.payload.config_hash,
            correlation_id=event.correlation_id,
            error=error,
        )
        self._publish(event, TrainingStatus.FAILED, run_id=run_id, error=error)

    def _publish(
        self,
        parent: TrainingDataEvent,
        status: TrainingStatus,
        *,
        run_id: str | None = None,
        error: str | None = None,
        train_seconds: float | None = None,
    ) -> None:
        payload = ModelTraining(
            status=status,
            model_type=self.model_type,
            run_id=run_id,
            error=error,
            train_seconds=train_seconds,
        )
        self.context.bus.publish(MODEL_TRAINING, new_event(payload, parent=parent))
