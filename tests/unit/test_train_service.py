"""TrainService: start-up checks, RUNNING/SUCCESS reports, idempotency, the FAILED path."""

from __future__ import annotations

import uuid

import pytest

from flts.bus import Bus
from flts.data.processed import ProcessedKeys
from flts.data.windows import Windows
from flts.events import (
    MODEL_TRAINING,
    TRAINING_DATA,
    Event,
    ModelTrainingEvent,
    TrainingStatus,
)
from flts.exceptions import ConfigurationError, DataValidationError
from flts.models.ridge import Ridge
from flts.services.context import ServiceContext
from flts.services.train import TrainService
from helpers import training_event, write_data

CONFIG_HASH = "0123abcd" * 2


def reports(bus: Bus) -> list[ModelTrainingEvent]:
    """Every model-training event published so far (read by a fresh consumer group)."""
    seen: list[Event] = []
    bus.consume(MODEL_TRAINING, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05)
    return [e for e in seen if isinstance(e, ModelTrainingEvent)]


def test_model_type_is_checked_at_construction(context: ServiceContext) -> None:
    with pytest.raises(ConfigurationError, match="unknown model type"):
        TrainService(context, "XGBOOST")
    with pytest.raises(ConfigurationError, match="needs a model type"):
        TrainService(context)
    with pytest.raises(ConfigurationError, match="does not accept"):
        TrainService(context, "RIDGE", params={"depth": 3})
    service = TrainService(context, "seasonal_naive")
    assert (service.model_type, service.group, service.topics) == (
        "SEASONAL_NAIVE",
        "train-seasonal_naive",
        (TRAINING_DATA,),
    )


def test_success_reports_running_then_the_run(context: ServiceContext) -> None:
    event = training_event(
        write_data(context.store, CONFIG_HASH), identifier="PobleSec", correlation_id="corr-42"
    )
    TrainService(context, "RIDGE").handle(event)

    running, success = reports(context.bus)
    assert running.payload.status is TrainingStatus.RUNNING
    assert success.payload.status is TrainingStatus.SUCCESS
    for report in (running, success):
        assert report.payload.model_type == "RIDGE"
        assert (report.correlation_id, report.identifier, report.config_hash) == (
            "corr-42",
            "PobleSec",
            CONFIG_HASH,
        )
    [run] = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="PobleSec")
    assert success.payload.run_id == run.run_id
    assert run.finished
    assert success.payload.train_seconds == pytest.approx(run.train_seconds, abs=1e-3)
    assert "validation_nrmse" in run.metrics


def test_same_training_data_twice_trains_once(context: ServiceContext) -> None:
    keys = write_data(context.store, CONFIG_HASH)
    event = training_event(keys)
    service = TrainService(context, "RIDGE")
    service.handle(event)
    service.handle(event)  # a redelivery
    TrainService(context, "RIDGE").handle(training_event(keys))  # a re-publish, new event id

    runs = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")
    assert len(runs) == 1
    statuses = [(r.payload.status, r.payload.run_id) for r in reports(context.bus)]
    assert statuses == [
        (TrainingStatus.RUNNING, None),
        (TrainingStatus.SUCCESS, runs[0].run_id),
        (TrainingStatus.SUCCESS, runs[0].run_id),
        (TrainingStatus.SUCCESS, runs[0].run_id),
    ]


def test_duplicate_through_the_bus_trains_once(context: ServiceContext) -> None:
    event = training_event(write_data(context.store, CONFIG_HASH))
    context.bus.publish(TRAINING_DATA, event)
    context.bus.publish(TRAINING_DATA, event)
    service = TrainService(context, "PERSISTENCE")
    stats = context.bus.consume(service.topics, service.group, service.handle, max_idle=0.1)
    assert (stats.handled, stats.duplicates) == (1, 1)
    assert len(context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")) == 1


def test_model_failure_publishes_failed_with_the_error(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: Ridge, train: Windows, validation: Windows) -> None:
        raise FloatingPointError("singular design matrix")

    monkeypatch.setattr(Ridge, "_fit", explode)
    event = training_event(write_data(context.store, CONFIG_HASH))
    TrainService(context, "RIDGE").handle(event)  # no raise

    running, failed = reports(context.bus)
    assert running.payload.status is TrainingStatus.RUNNING
    assert failed.payload.status is TrainingStatus.FAILED
    assert failed.payload.error == "FloatingPointError: singular design matrix"
    [run] = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")
    assert (run.status, run.model_type, failed.payload.run_id) == ("FAILED", "RIDGE", run.run_id)
    assert run.error == failed.payload.error

    # A failed run is not a finished one: a later delivery trains again.
    monkeypatch.undo()
    TrainService(context, "RIDGE").handle(training_event(write_data(context.store, CONFIG_HASH)))
    runs = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")
    assert [r.status for r in runs] == ["FAILED", "FINISHED"]


def test_missing_processed_data_raises_for_the_bus(context: ServiceContext) -> None:
    event = training_event(ProcessedKeys.for_hash(CONFIG_HASH))  # nothing written
    with pytest.raises(DataValidationError, match="no complete processed data"):
        TrainService(context, "PERSISTENCE").handle(event)
    assert context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global") == []
