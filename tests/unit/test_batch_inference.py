"""Batch inference: the champion's forecasts over held-out data land in a new append-only log
object whose errors and scores match an independent recomputation.

Tracking is replaced by a stand-in that only loads saved model directories by run id (the one
call batch inference makes); the model itself is a real fitted and saved RIDGE forecaster.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from flts.data.hashing import content_digest
from flts.data.prepare import windows_from_frame
from flts.data.processed import ProcessedKeys, read_splits
from flts.data.synthetic import synthetic_traffic
from flts.evaluation import score
from flts.events import (
    DatasetUploaded,
    DatasetUploadedEvent,
    ModelSelected,
    new_event,
)
from flts.models.base import Forecaster, load_model
from flts.models.registry import model_class
from flts.promotion import Promotion, PromotionStore
from flts.services.batch_inference import LOGS_ROOT, BatchInferenceService, latest_live_scores
from flts.services.context import ServiceContext
from flts.services.preprocess import PreprocessService, processed_payloads

IDENTIFIER = "PobleSec"


class SavedModels:
    """Stand-in for the tracker: run id -> saved model directory."""

    def __init__(self) -> None:
        self.dirs: dict[str, Path] = {}

    def load_model(self, run_id: str) -> Forecaster:
        return load_model(self.dirs[run_id])


def _processed(context: ServiceContext, seed: int) -> ProcessedKeys:
    """Processed data from a synthetic upload, through the real preprocess service."""
    full = synthetic_traffic(500, seed=seed)
    train = full.iloc[:400].to_csv(index=False).encode()
    test = full.iloc[400:].to_csv(index=False).encode()
    context.store.put(f"raw/{seed}/train.csv", train)
    context.store.put(f"raw/{seed}/test.csv", test)
    event = new_event(
        DatasetUploaded(
            dataset_id=f"d{seed}",
            filename="train.csv",
            train_key=f"raw/{seed}/train.csv",
            test_key=f"raw/{seed}/test.csv",
            size_bytes=len(train),
            digest=content_digest(train),
        ),
        identifier=IDENTIFIER,
    )
    assert isinstance(event, DatasetUploadedEvent)
    return PreprocessService(context).process(event)


def _fit_ridge(context: ServiceContext, keys: ProcessedKeys, directory: Path) -> Forecaster:
    prepared = read_splits(context.store, keys).windows()
    model = model_class("RIDGE")(
        prepared.spec, prepared.input_scaler, prepared.target_scaler, seed=0
    )
    model.fit(prepared.train, prepared.validation)
    model.save(directory)
    return model


@pytest.fixture
def champion(
    context: ServiceContext, tmp_path: Path
) -> tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster]:
    keys = _processed(context, seed=11)
    model = _fit_ridge(context, keys, tmp_path / "run-a")
    models = SavedModels()
    models.dirs["runa"] = tmp_path / "run-a"
    promotions = PromotionStore(context.store)
    promotions.record(
        Promotion(
            run_id="runa", model_type="RIDGE", config_hash=keys.config_hash, identifier=IDENTIFIER
        )
    )
    service = BatchInferenceService(context, models=models, promotions=promotions)
    return service, promotions, keys, model


def _selected() -> ModelSelected:
    return ModelSelected(
        run_id="runa", model_type="RIDGE", scores={"nrmse": 0.5}, promoted_at=datetime.now(UTC)
    )


def test_model_selected_writes_a_log_matching_recomputation(
    context: ServiceContext,
    champion: tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster],
) -> None:
    service, _, keys, model = champion
    event = new_event(_selected(), identifier=IDENTIFIER, config_hash=keys.config_hash)
    service.handle(event)

    (key,) = context.store.list(f"{LOGS_ROOT}/{IDENTIFIER}")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert key.startswith(f"{LOGS_ROOT}/{IDENTIFIER}/{today}/")
    assert key.endswith("-runa.json")
    document = context.store.get_json(key)

    splits = read_splits(context.store, keys)
    assert splits.test is not None
    windows = windows_from_frame(splits.test, splits.spec)
    expected_forecast = np.clip(model.predict(windows), 0.0, None)
    actuals = windows.targets
    n, horizon, n_targets = actuals.shape
    assert document["n_windows"] == n == 90  # 100 test rows - 10 lags
    assert document["run_id"] == "runa"
    assert document["model_type"] == "RIDGE"
    assert document["config_hash"] == keys.config_hash
    assert document["trigger"]["event_id"] == event.event_id
    assert document["targets"] == list(splits.spec.targets)
    assert np.array(document["target_times"]).shape == (n, horizon)
    for i, target in enumerate(splits.spec.targets):
        forecast = np.array(document["forecasts"][target])
        actual = np.array(document["actuals"][target])
        errors = np.array(document["errors"][target])
        assert forecast.shape == actual.shape == errors.shape == (n, horizon)
        np.testing.assert_allclose(forecast, expected_forecast[:, :, i], rtol=1e-12)
        np.testing.assert_array_equal(actual, actuals[:, :, i])
        np.testing.assert_allclose(errors, expected_forecast[:, :, i] - actuals[:, :, i])
    expected_scores = score(actuals, expected_forecast, splits.spec.targets)
    assert document["scores"]["nrmse"] == pytest.approx(expected_scores.nrmse, rel=1e-12)
    assert document["scores"]["mae5"] == pytest.approx(expected_scores.mae5, rel=1e-12)
    assert len(document["scores"]["per_target"]) == n_targets


def test_second_run_writes_a_second_object_and_never_rewrites(
    context: ServiceContext,
    champion: tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster],
) -> None:
    service, _, keys, _ = champion
    moment = datetime(2020, 3, 1, 12, 0, tzinfo=UTC)  # before any real run
    first = service.run("runa", IDENTIFIER, keys.config_hash, now=moment)
    assert first is not None
    before = context.store.get(first)
    # Same instant on purpose: the name collides and must not overwrite.
    second = service.run("runa", IDENTIFIER, keys.config_hash, now=moment)
    assert second is not None
    assert second != first
    assert context.store.get(first) == before

    # New data arrives for the identifier: the champion is run on its test split.
    other = _processed(context, seed=12)
    service.handle(new_event(processed_payloads(other)[1], identifier=IDENTIFIER))
    logs = list(context.store.list(f"{LOGS_ROOT}/{IDENTIFIER}"))
    assert len(logs) == 3
    assert context.store.get(first) == before
    latest = latest_live_scores(context.store, IDENTIFIER)
    assert latest is not None
    newest = context.store.get_json(max(logs))
    assert newest["config_hash"] == other.config_hash
    assert latest["config_hash"] == other.config_hash
    assert latest["scores"]["nrmse"] == newest["scores"]["nrmse"]
    assert latest["run_id"] == "runa"


def test_inference_data_without_champion_writes_nothing(
    context: ServiceContext,
    champion: tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster],
) -> None:
    service, _, keys, _ = champion
    service.handle(new_event(processed_payloads(keys)[1], identifier="ElBorn"))
    assert list(context.store.list(LOGS_ROOT)) == []
    assert latest_live_scores(context.store, "ElBorn") is None


def test_model_selected_without_hash_uses_the_pointer(
    context: ServiceContext,
    champion: tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster],
) -> None:
    service, _, keys, _ = champion
    event = new_event(_selected(), identifier=IDENTIFIER)
    assert event.config_hash is None
    service.handle(event)
    (key,) = context.store.list(f"{LOGS_ROOT}/{IDENTIFIER}")
    assert context.store.get_json(key)["config_hash"] == keys.config_hash


def test_consumed_from_the_bus(
    context: ServiceContext,
    champion: tuple[BatchInferenceService, PromotionStore, ProcessedKeys, Forecaster],
) -> None:
    service, _, keys, _ = champion
    event = new_event(_selected(), identifier=IDENTIFIER, config_hash=keys.config_hash)
    context.bus.publish("model-selected", event)
    stats = context.bus.consume(service.topics, service.group, service.handle, max_idle=0.3)
    assert stats.handled == 1
    assert len(list(context.store.list(LOGS_ROOT))) == 1


def test_with_the_real_tracker_and_pointer(context: ServiceContext, tmp_path: Path) -> None:
    """No stand-ins: the champion is logged in MLflow (SQLite) and found through the context's
    own tracker and promotion store."""
    keys = _processed(context, seed=13)
    model = _fit_ridge(context, keys, tmp_path / "local")
    run_id = context.tracker.log_training_run(
        model, identifier=IDENTIFIER, config_hash=keys.config_hash, correlation_id="c"
    )
    context.promotions.record(
        Promotion(
            run_id=run_id,
            model_type="RIDGE",
            config_hash=keys.config_hash,
            identifier=IDENTIFIER,
        )
    )
    service = BatchInferenceService(context)
    service.handle(new_event(processed_payloads(keys)[1], identifier=IDENTIFIER))
    latest = latest_live_scores(context.store, IDENTIFIER)
    assert latest is not None
    assert latest["run_id"] == run_id
    assert latest["key"].endswith(f"-{run_id}.json")
    splits = read_splits(context.store, keys)
    assert splits.test is not None
    windows = windows_from_frame(splits.test, splits.spec)
    expected = score(windows.targets, model.predict(windows), splits.spec.targets)
    assert latest["scores"]["nrmse"] == pytest.approx(expected.nrmse, rel=1e-9)
