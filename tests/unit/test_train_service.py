"""TrainService: start-up checks, RUNNING/SUCCESS reports, idempotency, the FAILED path."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.bus import Bus
from flts.data import FeatureSpec, split, validate_frame
from flts.data.processed import ProcessedKeys, write_processed
from flts.data.synthetic import synthetic_traffic
from flts.data.windows import Windows
from flts.events import (
    MODEL_TRAINING,
    TRAINING_DATA,
    Event,
    ModelTrainingEvent,
    TrainingData,
    TrainingDataEvent,
    TrainingStatus,
    new_event,
)
from flts.exceptions import ConfigurationError, DataValidationError
from flts.models.ridge import Ridge
from flts.services.context import ServiceContext
from flts.services.train import TrainService
from flts.settings import Settings
from flts.storage import ObjectStore
from flts.tracking import Tracker

CONFIG_HASH = "0123abcd" * 2


@pytest.fixture(scope="module")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once (copying it is instant)."""
    home = tmp_path_factory.mktemp("mlflow-template")
    database = home / "mlflow.db"
    Tracker(Settings(home=home, tracking_uri=f"sqlite:///{database}")).client.search_experiments()
    return database


@pytest.fixture
def context(tmp_path: Path, mlflow_template: Path) -> Iterator[ServiceContext]:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    settings = Settings(
        home=tmp_path,
        bus_url=f"memory://{uuid.uuid4().hex}",
        storage_url=f"memory://{uuid.uuid4().hex}",
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    context = ServiceContext(settings)
    yield context
    context.close()


def write_data(store: ObjectStore, config_hash: str = CONFIG_HASH) -> ProcessedKeys:
    """Processed data as preprocessing leaves it (small synthetic table)."""
    spec = FeatureSpec()
    full = synthetic_traffic(800, seed=5)
    train = validate_frame(full.iloc[:600].reset_index(drop=True), spec)
    test = validate_frame(full.iloc[600:].reset_index(drop=True), spec)
    splits = split(train, test, spec=spec)
    return write_processed(
        store, splits, config_hash=config_hash, canonical_json="{}", input_digests={}
    )


def training_event(keys: ProcessedKeys, identifier: str = "global") -> TrainingDataEvent:
    payload = TrainingData(
        config_hash=keys.config_hash,
        processed_prefix=keys.prefix,
        train_key=keys.train_key,
        validation_key=keys.validation_key,
        test_key=keys.test_key,
        scaler_key=keys.scaler_key,
        feature_spec_key=keys.feature_spec_key,
        meta_key=keys.meta_key,
    )
    event = new_event(payload, identifier=identifier, correlation_id="corr-42")
    assert isinstance(event, TrainingDataEvent)
    return event


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
    event = training_event(write_data(context.store), identifier="PobleSec")
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
    keys = write_data(context.store)
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
    event = training_event(write_data(context.store))
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
    TrainService(context, "RIDGE").handle(training_event(write_data(context.store)))  # no raise

    running, failed = reports(context.bus)
    assert running.payload.status is TrainingStatus.RUNNING
    assert failed.payload.status is TrainingStatus.FAILED
    assert failed.payload.error == "FloatingPointError: singular design matrix"
    [run] = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")
    assert (run.status, run.model_type, failed.payload.run_id) == ("FAILED", "RIDGE", run.run_id)
    assert run.error == failed.payload.error

    # A failed run is not a finished one: a later delivery trains again.
    monkeypatch.undo()
    TrainService(context, "RIDGE").handle(training_event(write_data(context.store)))
    runs = context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global")
    assert [r.status for r in runs] == ["FAILED", "FINISHED"]


def test_missing_processed_data_raises_for_the_bus(context: ServiceContext) -> None:
    event = training_event(ProcessedKeys.for_hash(CONFIG_HASH))  # nothing written
    with pytest.raises(DataValidationError, match="no complete processed data"):
        TrainService(context, "PERSISTENCE").handle(event)
    assert context.tracker.runs_for(config_hash=CONFIG_HASH, identifier="global") == []
