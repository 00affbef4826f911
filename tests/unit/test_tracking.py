"""Tracker on MLflow with a SQLite store: runs, durable run queries, models, registry alias."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import numpy as np
import pytest

from flts.data import FeatureSpec, PreparedData, prepare
from flts.evaluation import score
from flts.exceptions import ConfigurationError, ModelError
from flts.models import model_class
from flts.models.base import Forecaster
from flts.promotion import CHAMPION_ALIAS
from flts.settings import Settings
from flts.tracking import FAILED, FINISHED, MODEL_ARTIFACT, Tracker, is_server_uri, sqlite_path
from helpers import synthetic_tables

HASH_A = "a" * 16
HASH_B = "b" * 16


@pytest.fixture
def tracker(settings: Settings) -> Tracker:
    return Tracker(settings)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    spec = FeatureSpec()
    train, test = synthetic_tables(900, 700, seed=3, spec=spec)
    return prepare(train, test, spec=spec)


def _fit(data: PreparedData, model_type: str, **params: object) -> Forecaster:
    cls = model_class(model_type)
    model = cls(data.spec, data.input_scaler, data.target_scaler, seed=0, **params)
    return model.fit(data.train, data.validation)


def _log(tracker: Tracker, model: Forecaster, config_hash: str = HASH_A, **kw: str) -> str:
    identifier = kw.get("identifier", "global")
    return tracker.log_training_run(
        model, identifier=identifier, config_hash=config_hash, correlation_id="corr-1"
    )


def test_training_run_is_tagged_measured_and_loadable(
    tracker: Tracker, data: PreparedData, tmp_path: Path
) -> None:
    model = _fit(data, "RIDGE")
    assert data.test is not None
    validation = score(data.validation.targets, model.predict(data.validation), data.spec.targets)
    run_id = tracker.log_training_run(
        model,
        identifier="PobleSec",
        config_hash=HASH_A,
        correlation_id="corr-7",
        validation=validation,
    )

    [record] = tracker.runs_for(config_hash=HASH_A, identifier="PobleSec")
    assert record.run_id == run_id
    assert record.status == FINISHED
    assert record.finished
    assert record.terminal
    assert (record.model_type, record.identifier, record.config_hash, record.correlation_id) == (
        "RIDGE",
        "PobleSec",
        HASH_A,
        "corr-7",
    )
    assert record.metrics["validation_nrmse"] == pytest.approx(validation.nrmse)
    assert record.metrics["validation_down_rmse"] == pytest.approx(
        validation.per_target["down"].rmse
    )
    assert record.train_seconds is not None
    assert record.train_seconds >= 0
    run = tracker.client.get_run(run_id)
    assert run.data.params["seed"] == "0"
    assert "alphas" in run.data.params

    # The saved model directory is the artifact, under the home's artifact folder.
    directory = tracker.model_dir(run_id)
    assert directory == tmp_path / "cache" / "models" / run_id
    names = {p.name for p in directory.iterdir()}
    assert {"model.json", "feature_spec.json", "input_scaler.json", "target_scaler.json"} <= names
    assert not [p for p in directory.rglob("*") if p.suffix in (".pkl", ".pickle")]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts").resolve().as_uri())

    loaded = tracker.load_model(run_id)
    np.testing.assert_allclose(loaded.predict(data.test), model.predict(data.test), rtol=1e-12)


def test_neural_run_carries_onnx_and_native_weights(tracker: Tracker, data: PreparedData) -> None:
    model = _fit(data, "LSTM", max_epochs=2, hidden_size=8, batch_size=256)
    run_id = _log(tracker, model)
    names = {p.name for p in tracker.model_dir(run_id).iterdir()}
    assert {"model.onnx", "state_dict.pt", "model.json"} <= names
    assert data.test is not None
    loaded = tracker.load_model(run_id)
    np.testing.assert_allclose(loaded.predict(data.test), model.predict(data.test), rtol=1e-5)


def test_failed_run_records_the_error(tracker: Tracker) -> None:
    run_id = tracker.log_failed_run(
        model_type="GRU",
        identifier="global",
        config_hash=HASH_A,
        correlation_id="corr-1",
        error="RuntimeError: loss is NaN",
    )
    [record] = tracker.runs_for(config_hash=HASH_A, identifier="global")
    assert (record.run_id, record.status, record.model_type) == (run_id, FAILED, "GRU")
    assert record.terminal
    assert not record.finished
    assert record.error == "RuntimeError: loss is NaN"


def test_runs_for_filters_by_hash_and_identifier_oldest_first(
    tracker: Tracker, data: PreparedData
) -> None:
    persistence = _fit(data, "PERSISTENCE")
    first = _log(tracker, persistence)
    second = _log(tracker, _fit(data, "SEASONAL_NAIVE"))
    _log(tracker, persistence, config_hash=HASH_B)
    _log(tracker, persistence, identifier="ElBorn")

    runs = tracker.runs_for(config_hash=HASH_A, identifier="global")
    assert [r.run_id for r in runs] == [first, second]
    assert [r.model_type for r in runs] == ["PERSISTENCE", "SEASONAL_NAIVE"]
    assert tracker.runs_for(config_hash="c" * 16, identifier="global") == []
    with pytest.raises(ConfigurationError):
        tracker.runs_for(config_hash=HASH_A, identifier="x' or tags.identifier != '")


def test_run_exists_follows_deletion(tracker: Tracker, data: PreparedData) -> None:
    run_id = _log(tracker, _fit(data, "PERSISTENCE"))
    assert tracker.run_exists(run_id)
    assert not tracker.run_exists(uuid.uuid4().hex)
    tracker.client.delete_run(run_id)
    assert not tracker.run_exists(run_id)
    assert tracker.runs_for(config_hash=HASH_A, identifier="global") == []


def test_model_dir_is_cached_and_missing_models_are_model_errors(
    tracker: Tracker, data: PreparedData
) -> None:
    run_id = _log(tracker, _fit(data, "PERSISTENCE"))
    directory = tracker.model_dir(run_id)
    (directory / "marker").write_text("cached")
    assert tracker.model_dir(run_id) == directory
    assert (directory / "marker").exists()  # not downloaded again

    failed = tracker.log_failed_run(
        model_type="RIDGE", identifier="global", config_hash=HASH_A, correlation_id="c", error="x"
    )
    with pytest.raises(ModelError):
        tracker.load_model(failed)
    with pytest.raises(ModelError):
        tracker.model_dir("../escape")


def test_set_alias_moves_the_alias_idempotently(tracker: Tracker, data: PreparedData) -> None:
    first = _log(tracker, _fit(data, "PERSISTENCE"))
    second = _log(tracker, _fit(data, "RIDGE"))
    assert tracker.alias_run_id("global", CHAMPION_ALIAS) is None

    assert tracker.set_alias(first, "global", CHAMPION_ALIAS) == "1"
    assert (
        tracker.set_alias(first, "global", CHAMPION_ALIAS) == "1"
    )  # a resumed promotion adds nothing
    assert tracker.alias_run_id("global", CHAMPION_ALIAS) == first
    assert tracker.set_alias(second, "global", CHAMPION_ALIAS) == "2"
    version = tracker.client.get_model_version_by_alias("flts-global", "champion")
    assert (str(version.version), version.run_id) == ("2", second)
    assert version.source == f"runs:/{second}/{MODEL_ARTIFACT}"
    assert tracker.alias_run_id("ElBorn", CHAMPION_ALIAS) is None


def test_concurrent_writers_of_one_alias_agree(tracker: Tracker, data: PreparedData) -> None:
    """Two writers of one promotion (two evaluators, or one resuming beside one not quite
    gone) set the alias at the same moment, each through its own tracker: neither fails, and
    the alias ends on one version of the run."""
    run_id = _log(tracker, _fit(data, "PERSISTENCE"))
    writers = [Tracker(tracker.settings) for _ in range(4)]
    for writer in writers:
        writer.experiment_id  # connect before the race  # noqa: B018
    start = threading.Barrier(len(writers))
    versions: list[str] = []
    errors: list[BaseException] = []

    def set_alias(writer: Tracker) -> None:
        start.wait()
        try:
            versions.append(writer.set_alias(run_id, "global", CHAMPION_ALIAS))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=set_alias, args=(w,)) for w in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(set(versions)) == 1
    assert tracker.alias_run_id("global", CHAMPION_ALIAS) == run_id
    alias = tracker.client.get_model_version_by_alias("flts-global", CHAMPION_ALIAS)
    assert str(alias.version) == versions[0]


def test_two_trackers_share_one_store(tracker: Tracker, data: PreparedData) -> None:
    other = Tracker(tracker.settings)
    run_id = _log(tracker, _fit(data, "PERSISTENCE"))
    assert other.experiment_id == tracker.experiment_id
    assert [r.run_id for r in other.runs_for(config_hash=HASH_A, identifier="global")] == [run_id]


def test_server_uris_choose_their_own_artifact_location(tmp_path: Path) -> None:
    assert is_server_uri("http://mlflow:5000")
    assert is_server_uri("HTTPS://mlflow")
    assert not is_server_uri("sqlite:///x.db")
    assert not is_server_uri("postgresql://h/db")
    remote = Tracker(Settings(home=tmp_path, tracking_uri="http://127.0.0.1:9"))
    assert remote._artifact_location() is None  # no local folder for a server's runs
    assert not (tmp_path / "artifacts").exists()


def test_sqlite_path_names_the_database_file() -> None:
    assert sqlite_path("sqlite:///.flts/mlflow.db") == Path(".flts/mlflow.db")
    assert sqlite_path("sqlite:////abs/mlflow.db?timeout=5") == Path("/abs/mlflow.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("http://mlflow:5000") is None
