"""Batch inference: run the champion over held-out data and log how it does, append-only.

Consumer group ``batch-inference`` (one replica wins each event):

* ``model-selected``: the new champion is run over the processed test split of the data it was
  promoted on (the event's ``config_hash``, else the promotion pointer's).
* ``inference-data``: new processed data arrived; if the identifier has a champion
  (``promotions.current``) it is run over that data's test split, which is the live check of
  how the champion does on data it was not selected on. No champion yet: nothing to do.

Each run writes **one new object** (docs/architecture.md, rule 9: no read-modify-write)::

    inference-logs/<identifier>/<YYYY-MM-DD>/<UTC yyyymmddThhmmssffffffZ>-<run_id>.json

holding the target times, forecasts, actuals and errors (forecast - actual) per target as
``(windows, horizon)`` arrays, plus the summary scores of :func:`flts.evaluation.score`. Forecasts
are clipped at 0 as in scoring (traffic cannot be negative), so the errors and the scores in
one log agree. Names sort by time, so the newest log is the last key; :func:`latest_live_scores`
reads it for ``flts status``.

A redelivered event (a consumer died after writing but before committing) writes a second log;
that is harmless for an append-only log and preferable to a read-modify-write dedupe.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import TypeAdapter

from flts.data.prepare import windows_from_frame
from flts.data.processed import ProcessedKeys, read_splits
from flts.data.spec import FeatureSpec
from flts.evaluation import score
from flts.events import (
    INFERENCE_DATA,
    MODEL_SELECTED,
    Event,
    Identifier,
    InferenceDataEvent,
    ModelSelectedEvent,
)
from flts.exceptions import DataValidationError, FeatureMismatchError
from flts.models.base import Forecaster
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext
from flts.storage import ObjectStore

log = logging.getLogger(__name__)

LOGS_ROOT = "inference-logs"
LOG_SCHEMA_VERSION = 1
_STAMP = "%Y%m%dT%H%M%S%fZ"
_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


class ModelLoader(Protocol):
    """What batch inference needs from tracking: a champion by run id."""

    def load_model(self, run_id: str) -> Forecaster: ...


def log_prefix(identifier: str) -> str:
    """``inference-logs/<identifier>`` for a validated identifier."""
    return f"{LOGS_ROOT}/{_IDENTIFIER.validate_python(identifier)}"


def compatible(model_spec: FeatureSpec, data_spec: FeatureSpec) -> bool:
    """True when windows built with ``data_spec`` are valid input for the model and its
    targets match (time features are computed by the model itself, so they may differ)."""
    return (
        model_spec.inputs == data_spec.inputs
        and model_spec.targets == data_spec.targets
        and model_spec.lags == data_spec.lags
        and model_spec.horizon == data_spec.horizon
        and model_spec.step == data_spec.step
    )


class BatchInferenceService:
    """Consumes ``model-selected`` and ``inference-data``; writes ``inference-logs/``."""

    topics: ClassVar[tuple[str, ...]] = (MODEL_SELECTED, INFERENCE_DATA)
    group: str = "batch-inference"

    def __init__(
        self,
        context: ServiceContext,
        *,
        models: ModelLoader | None = None,
        promotions: PromotionStore | None = None,
    ) -> None:
        """``models`` and ``promotions`` default to the context's tracker and promotion
        store; passing them lets a caller (or a test) supply its own."""
        self.context = context
        self._models = models
        self._promotions = promotions

    @property
    def models(self) -> ModelLoader:
        return self._models if self._models is not None else self.context.tracker

    @property
    def promotions(self) -> PromotionStore:
        return self._promotions if self._promotions is not None else self.context.promotions

    def handle(self, event: Event) -> None:
        """Run the relevant champion for ``event`` and write one log object."""
        if isinstance(event, ModelSelectedEvent):
            config_hash = event.config_hash
            if config_hash is None:
                promotion = self.promotions.current(event.identifier)
                if promotion is None or promotion.run_id != event.payload.run_id:
                    raise DataValidationError(
                        f"model-selected {event.event_id} has no config_hash and the pointer "
                        f"for {event.identifier!r} names another run: no data to run it on"
                    )
                config_hash = promotion.config_hash
            self.run(event.payload.run_id, event.identifier, config_hash, trigger=event)
        elif isinstance(event, InferenceDataEvent):
            champion = self.promotions.current(event.identifier)
            if champion is None:
                log.info("no champion for %r yet: nothing to run on new data", event.identifier)
                return
            self.run(champion.run_id, event.identifier, event.payload.config_hash, trigger=event)
        else:
            log.warning("batch inference ignores %s event %s", event.type, event.event_id)

    def run(
        self,
        run_id: str,
        identifier: str,
        config_hash: str,
        *,
        trigger: Event | None = None,
        now: datetime | None = None,
    ) -> str | None:
        """Run model ``run_id`` over the test split of ``config_hash``; write the log and
        return its key (``None`` when the model's feature spec cannot read that data)."""
        store = self.context.store
        splits = read_splits(store, ProcessedKeys.for_hash(config_hash))
        if splits.test is None:
            raise DataValidationError(f"processed data {config_hash} has no test split")
        model = self.models.load_model(run_id)
        if not compatible(model.spec, splits.spec):
            # An expected state (a champion trained on another task), not a failure to retry.
            log.warning(
                "champion %s (%s) does not fit the feature spec of data %s: skipped",
                run_id,
                model.model_type,
                config_hash,
            )
            return None
        windows = windows_from_frame(splits.test, splits.spec)
        forecasts = np.clip(model.predict(windows), 0.0, None)
        actuals = windows.targets
        if forecasts.shape != actuals.shape:
            raise FeatureMismatchError(
                f"forecast shape {forecasts.shape} differs from actuals {actuals.shape}"
            )
        targets = list(splits.spec.targets)
        scores = score(actuals, forecasts, targets)
        moment = (now or datetime.now(UTC)).astimezone(UTC)
        document: dict[str, Any] = {
            "schema_version": LOG_SCHEMA_VERSION,
            "identifier": identifier,
            "run_id": run_id,
            "model_type": model.model_type,
            "config_hash": config_hash,
            "created_at": moment.isoformat(),
            "trigger": None
            if trigger is None
            else {
                "type": trigger.type,
                "event_id": trigger.event_id,
                "correlation_id": trigger.correlation_id,
            },
            "targets": targets,
            "horizon": splits.spec.horizon,
            "n_windows": len(windows),
            "target_times": np.datetime_as_string(windows.target_times, unit="s").tolist(),
            "forecasts": _by_target(forecasts, targets),
            "actuals": _by_target(actuals, targets),
            "errors": _by_target(forecasts - actuals, targets),
            "scores": scores.model_dump(mode="json"),
        }
        key = self._new_key(store, identifier, run_id, moment)
        store.put_json(key, document, atomic=True)
        log.info(
            "batch inference %s on %s: nrmse %.4f -> %s",
            run_id,
            config_hash,
            scores.nrmse,
            key,
            extra={
                "event": "batch-inference-written",
                "correlation_id": None if trigger is None else trigger.correlation_id,
                "config_hash": config_hash,
                "run_id": run_id,
                "model_type": model.model_type,
                "identifier": identifier,
            },
        )
        return key

    @staticmethod
    def _new_key(store: ObjectStore, identifier: str, run_id: str, moment: datetime) -> str:
        """A key no object has yet: an existing one is never overwritten."""
        base = f"{log_prefix(identifier)}/{moment:%Y-%m-%d}/{moment.strftime(_STAMP)}-{run_id}"
        key, n = f"{base}.json", 1
        while store.exists(key):
            key, n = f"{base}-{n}.json", n + 1
        return key


def _by_target(values: np.ndarray, targets: list[str]) -> dict[str, list[list[float]]]:
    """``(n, horizon, targets)`` -> ``{target: n x horizon nested lists}``."""
    return {t: values[:, :, i].tolist() for i, t in enumerate(targets)}


def latest_live_scores(store: ObjectStore, identifier: str) -> dict[str, Any] | None:
    """Summary of the newest inference log of ``identifier`` (``None`` when there is none):
    ``key``, ``run_id``, ``model_type``, ``config_hash``, ``created_at``, ``n_windows`` and
    ``scores`` (``nrmse``, ``mae5``, ``rmse5``, ``per_target``...)."""
    keys = [k for k in store.list(log_prefix(identifier)) if k.endswith(".json")]
    if not keys:
        return None
    # Date folders and time-stamped names sort chronologically; the last key is the newest.
    key = max(keys)
    document = store.get_json(key)
    return {
        "key": key,
        **{
            field: document.get(field)
            for field in ("run_id", "model_type", "config_hash", "created_at", "n_windows")
        },
        "scores": document.get("scores"),
    }
