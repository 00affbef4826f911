"""The Tracker against a real MLflow tracking server: PostgreSQL backend store, artifacts in
S3 (SeaweedFS) served through the server, so the client needs only the tracking URI.

The test process never holds the S3 keys: if the client tried to reach S3 itself, logging or
loading a model would fail; the objects the server wrote are then checked in the bucket.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from flts.data import FeatureSpec, PreparedData, prepare
from flts.models import model_class
from flts.models.base import Forecaster
from flts.promotion import CHAMPION_ALIAS
from flts.settings import Settings
from flts.tracking import FAILED, FINISHED, MODEL_ARTIFACT, Tracker
from helpers import synthetic_tables
from servers import Server
from servers.s3 import SeaweedFS

from .conftest import ARTIFACT_BUCKET, ARTIFACT_PREFIX

HASH = "f" * 16


@pytest.fixture(scope="module")
def data() -> PreparedData:
    spec = FeatureSpec()
    train, test = synthetic_tables(700, 550, seed=4, spec=spec)
    return prepare(train, test, spec=spec)


@pytest.fixture(scope="module")
def ridge(data: PreparedData) -> Forecaster:
    model = model_class("RIDGE")(data.spec, data.input_scaler, data.target_scaler, seed=0)
    return model.fit(data.train, data.validation)


@pytest.fixture
def server_settings(
    mlflow_server: Server, s3_server: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings that name only the tracking server: no S3 variables in this process, and an
    experiment (and registry prefix) of this test's own on the shared server."""
    for name in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert s3_server.credentials.secret_access_key not in os.environ.values()
    return Settings(
        home=tmp_path / "home",
        tracking_uri=mlflow_server.url,
        storage_url=f"memory://{uuid.uuid4().hex}",
        bus_url=f"memory://{uuid.uuid4().hex}",
        registry_prefix=f"flts-it-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def tracker(server_settings: Settings) -> Tracker:
    return Tracker(server_settings)


def _log(tracker: Tracker, model: Forecaster, identifier: str = "PobleSec") -> str:
    return tracker.log_training_run(
        model, identifier=identifier, config_hash=HASH, correlation_id="corr-it"
    )


def test_training_run_round_trips_through_the_server(
    tracker: Tracker,
    server_settings: Settings,
    ridge: Forecaster,
    data: PreparedData,
    s3_server: SeaweedFS,
    tmp_path: Path,
) -> None:
    run_id = _log(tracker, ridge)

    [record] = tracker.runs_for(config_hash=HASH, identifier="PobleSec")
    assert (record.run_id, record.status, record.model_type) == (run_id, FINISHED, "RIDGE")
    assert (record.identifier, record.correlation_id) == ("PobleSec", "corr-it")
    assert record.train_seconds is not None
    assert tracker.runs_for(config_hash=HASH, identifier="ElBorn") == []

    # Artifacts went through the server (proxied URI) and landed in the server's bucket.
    artifact_uri = tracker.client.get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith("mlflow-artifacts:")
    stored = s3_server.filesystem().find(f"{ARTIFACT_BUCKET}/{ARTIFACT_PREFIX}")
    assert any(f"/{run_id}/artifacts/{MODEL_ARTIFACT}/model.json" in p for p in stored)

    # Another process (new tracker, empty model cache) loads a model that predicts the same.
    other_home = server_settings.model_copy(update={"home": tmp_path / "other"})
    loaded = Tracker(other_home).load_model(run_id)
    assert data.test is not None
    np.testing.assert_allclose(loaded.predict(data.test), ridge.predict(data.test), rtol=1e-12)
    assert (tmp_path / "other" / "cache" / "models" / run_id / "model.json").is_file()


def test_set_champion_moves_the_registry_alias(tracker: Tracker, ridge: Forecaster) -> None:
    first, second = _log(tracker, ridge), _log(tracker, ridge)
    assert tracker.alias_run_id("PobleSec", CHAMPION_ALIAS) is None
    assert tracker.set_alias(first, "PobleSec", CHAMPION_ALIAS) == "1"
    assert tracker.set_alias(first, "PobleSec", CHAMPION_ALIAS) == "1"  # idempotent on resume
    assert tracker.alias_run_id("PobleSec", CHAMPION_ALIAS) == first
    assert tracker.set_alias(second, "PobleSec", CHAMPION_ALIAS) == "2"
    assert tracker.alias_run_id("PobleSec", CHAMPION_ALIAS) == second
    version = tracker.client.get_model_version_by_alias(
        tracker.registered_model_name("PobleSec"), "champion"
    )
    assert version.source == f"runs:/{second}/{MODEL_ARTIFACT}"
    # The registry sweep's one listing sees aliases and tags through the server's REST API.
    assert tracker.alias_states(CHAMPION_ALIAS)["PobleSec"].as_written
    tracker.client.set_registered_model_alias(
        tracker.registered_model_name("PobleSec"), "champion", "1"
    )
    state = tracker.alias_states(CHAMPION_ALIAS)["PobleSec"]
    assert (state.version, state.written_version) == ("1", "2")


def test_run_exists_for_failed_unknown_and_deleted_runs(tracker: Tracker) -> None:
    failed = tracker.log_failed_run(
        model_type="GRU",
        identifier="PobleSec",
        config_hash=HASH,
        correlation_id="corr-it",
        error="RuntimeError: loss is NaN",
    )
    [record] = tracker.runs_for(config_hash=HASH, identifier="PobleSec")
    assert (record.status, record.error) == (FAILED, "RuntimeError: loss is NaN")
    assert tracker.run_exists(failed)
    assert not tracker.run_exists(uuid.uuid4().hex)
    tracker.client.delete_run(failed)
    assert not tracker.run_exists(failed)


def test_trackers_share_one_experiment_on_the_server(
    tracker: Tracker, server_settings: Settings, ridge: Forecaster
) -> None:
    other = Tracker(server_settings)
    run_id = _log(tracker, ridge)
    assert other.experiment_id == tracker.experiment_id
    assert [r.run_id for r in other.runs_for(config_hash=HASH, identifier="PobleSec")] == [run_id]


def test_pyfunc_model_card_and_evaluation_on_the_server(
    server_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trained and judged through the services against the server: the champion loads with
    ``mlflow.pyfunc`` from ``models:/``, predicts what the run's model predicts, and the
    evaluator's test metrics, figure and card are on the runs; a hand-moved alias is honoured."""
    import mlflow.pyfunc

    import helpers
    from flts.data.windows import last_window
    from flts.events import MODEL_TRAINING, Event
    from flts.promotion.registry import REGISTRY_ACTOR
    from flts.promotion.report import FIGURE_PATH
    from flts.services.context import ServiceContext
    from flts.services.evaluate import EvaluateService
    from flts.services.train import TrainService
    from flts.settings import EvaluationSettings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server_settings.tracking.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", server_settings.tracking.uri)
    types = ("PERSISTENCE", "RIDGE")
    settings = server_settings.model_copy(
        update={"evaluation": EvaluationSettings(expected_models=types)}
    )
    context = ServiceContext(settings)
    try:
        data = helpers.training_event(helpers.write_data(context.store, HASH, seed=7))
        for model_type in types:
            TrainService(context, model_type).handle(data)
        reports: list[Event] = []
        context.bus.consume(MODEL_TRAINING, "it-reader", reports.append, max_idle=0.05)
        evaluator = EvaluateService(context)
        evaluator.handle(reports[-1])
        decision = evaluator.decision("global", HASH)
        champion = context.promotions.current("global")
        assert decision is not None
        assert champion is not None

        name = context.tracker.registered_model_name("global")
        loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        example = loaded.input_example
        assert example is not None
        model = Tracker(settings).load_model(champion.run_id)
        window = last_window(
            example[list(model.spec.inputs)].to_numpy(np.float64),
            example["time"].to_numpy(dtype="datetime64[ns]"),
            model.spec,
        )
        expected = np.clip(model.predict(window), 0.0, None)
        answer = loaded.predict(example)
        np.testing.assert_allclose(
            answer[list(model.spec.targets)].to_numpy(), expected[0], rtol=1e-6
        )

        client = context.tracker.client
        for entry in decision.leaderboard:
            assert entry.run_id is not None
            metrics = client.get_run(entry.run_id).data.metrics
            assert metrics["test_nrmse"] == pytest.approx(entry.nrmse)
            assert all(f"test_nrmse_h{step}" in metrics for step in entry.horizon)
            paths = [a.path for a in client.list_artifacts(entry.run_id, "evaluation")]
            assert FIGURE_PATH in paths
            card = context.tracker.version_description(entry.run_id, "global")
            assert card is not None
            assert "## Evaluation" in card
            assert "## Lineage" in card

        other = next(e.run_id for e in decision.leaderboard if e.run_id != champion.run_id)
        assert other is not None
        version = context.tracker.register_version(other, "global")
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        [promotion] = evaluator.sync_registry()
        assert (promotion.run_id, promotion.actor) == (other, REGISTRY_ACTOR)
        assert context.promotions.history("global")[-1].run_id == other
    finally:
        context.close()
