"""Neural forecasters: persistence round trip, ONNX parity, determinism, early stopping, and
that training actually learns. Synthetic data and tiny networks keep the file fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from flts.data import FeatureSpec, PreparedData, Recipe, prepare, validate_frame  # noqa: E402
from flts.data.spec import LTE_FEATURES, LTE_TARGETS  # noqa: E402
from flts.evaluation import score  # noqa: E402
from flts.exceptions import ConfigurationError  # noqa: E402
from flts.models import load_model, model_class  # noqa: E402
from flts.models.baselines import Persistence  # noqa: E402
from flts.models.ensemble import Ensemble, greedy_weights  # noqa: E402
from flts.models.neural import TorchForecaster  # noqa: E402
from flts.models.onnx_runtime import OnnxSession, onnx_predict  # noqa: E402

#: Small enough to train in well under a second per model.
TINY: dict[str, Any] = {"hidden_size": 8, "max_epochs": 6, "patience": 3, "batch_size": 64}
NEURAL_TYPES = ["LSTM", "GRU", "MLP"]


def synthetic_frame(rows: int, *, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    """Every LTE feature as a noisy sine of period 40 steps with its own phase and scale."""
    rng = np.random.default_rng(seed)
    steps = np.arange(rows)
    data: dict[str, Any] = {"time": pd.date_range(start, periods=rows, freq="2min")}
    for i, column in enumerate(LTE_FEATURES):
        level = 10.0 ** (i % 4 + 1)
        wave = 1.5 + np.sin(2 * np.pi * steps / 40 + i)
        data[column] = level * (wave + 0.05 * rng.standard_normal(rows))
    return pd.DataFrame(data)


def build_prepared(spec: FeatureSpec | None = None) -> PreparedData:
    spec = spec or FeatureSpec()
    train = synthetic_frame(600, seed=1)
    test = synthetic_frame(200, seed=2, start=str(train["time"].iloc[-1] + pd.Timedelta("2min")))
    return prepare(
        validate_frame(train, spec),
        validate_frame(test, spec),
        spec=spec,
        recipe=Recipe(clip_percentiles=(1.0, 99.0)),
    )


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    return build_prepared()


def fit(prepared: PreparedData, model_type: str, seed: int = 0, **params: Any) -> TorchForecaster:
    cls = model_class(model_type)
    model = cls(
        prepared.spec,
        prepared.input_scaler,
        prepared.target_scaler,
        seed=seed,
        **{**TINY, **params},
    )
    assert isinstance(model, TorchForecaster)
    model.fit(prepared.train, prepared.validation)
    return model


@pytest.fixture(scope="module", params=NEURAL_TYPES)
def fitted(request: pytest.FixtureRequest, prepared: PreparedData) -> TorchForecaster:
    return fit(prepared, request.param)


@pytest.fixture(scope="module")
def saved(fitted: TorchForecaster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp(fitted.model_type.lower())
    fitted.save(directory)
    return directory


def test_save_writes_weights_and_onnx(saved: Path) -> None:
    assert (saved / "state_dict.pt").is_file()
    assert (saved / "model.onnx").is_file()
    assert not list(saved.glob("*.pkl"))


def test_load_round_trip_predicts_identically(
    fitted: TorchForecaster, saved: Path, prepared: PreparedData
) -> None:
    assert prepared.test is not None
    loaded = load_model(saved)
    assert type(loaded) is type(fitted)
    assert loaded.params == fitted.params
    assert loaded.metadata["best_epoch"] == fitted.metadata["best_epoch"]
    np.testing.assert_array_equal(loaded.predict(prepared.test), fitted.predict(prepared.test))


@pytest.mark.parametrize("batch", [1, 7, None])
def test_onnx_matches_torch(
    fitted: TorchForecaster, saved: Path, prepared: PreparedData, batch: int | None
) -> None:
    assert prepared.test is not None
    encoded = fitted.encode(prepared.test)[:batch]
    expected = fitted.predict_scaled(encoded)
    actual = OnnxSession(saved).run(encoded)
    assert actual.shape == expected.shape == (len(encoded), 1, len(prepared.spec.targets))
    np.testing.assert_allclose(actual, expected, rtol=0.0, atol=1e-5)


def test_onnx_predict_accepts_the_file_path(fitted: TorchForecaster, saved: Path) -> None:
    encoded = np.random.default_rng(0).uniform(size=(3, 10, 11))
    np.testing.assert_allclose(
        onnx_predict(saved / "model.onnx", encoded), fitted.predict_scaled(encoded), atol=1e-5
    )


def test_onnx_runtime_module_does_not_import_torch() -> None:
    code = "import sys, flts.models.onnx_runtime; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("model_type", ["LSTM", "MLP"])
def test_same_seed_same_predictions_other_seed_differs(
    prepared: PreparedData, model_type: str
) -> None:
    assert prepared.test is not None
    first = fit(prepared, model_type, seed=3, max_epochs=2).predict(prepared.test)
    again = fit(prepared, model_type, seed=3, max_epochs=2).predict(prepared.test)
    other = fit(prepared, model_type, seed=4, max_epochs=2).predict(prepared.test)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_fit_leaves_global_torch_rng_alone(prepared: PreparedData) -> None:
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    fit(prepared, "GRU", max_epochs=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_early_stopping_keeps_the_best_epoch(
    fitted: TorchForecaster, prepared: PreparedData
) -> None:
    meta = fitted.metadata
    history = meta["history"]
    # Epoch 0 is the untrained network, scored like any other epoch.
    assert 0 <= meta["best_epoch"] <= meta["epochs_run"] == len(history)
    curve = [meta["initial_validation_nrmse"]] + [h["validation_nrmse"] for h in history]
    assert meta["best_validation_nrmse"] == pytest.approx(min(curve))
    assert curve[meta["best_epoch"]] == pytest.approx(min(curve))
    # The weights in use are the best epoch's, not the last epoch's.
    restored = score(
        prepared.validation.targets, fitted.predict(prepared.validation), prepared.spec.targets
    ).nrmse
    assert restored == pytest.approx(min(curve), rel=1e-4)


def test_patience_stops_before_max_epochs(prepared: PreparedData) -> None:
    # A learning rate this large cannot keep improving, so patience must end training.
    model = fit(prepared, "LSTM", lr=0.5, max_epochs=40, patience=2, lr_decay_patience=100)
    assert model.metadata["stopped_early"]
    assert model.metadata["epochs_run"] <= model.metadata["best_epoch"] + 2


@pytest.mark.parametrize("model_type", NEURAL_TYPES)
def test_training_learns_and_beats_persistence(prepared: PreparedData, model_type: str) -> None:
    assert prepared.test is not None
    # No dropout: at 16 units it is noise (the MLP default of 0.1 was chosen at 128 units).
    model = fit(prepared, model_type, hidden_size=16, dropout=0.0, max_epochs=25, patience=6)
    history = model.metadata["history"]
    assert model.metadata["best_validation_loss"] < history[0]["validation_loss"]
    baseline = Persistence(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    baseline.fit(prepared.train, prepared.validation)
    targets = prepared.spec.targets
    learned = score(prepared.test.targets, model.predict(prepared.test), targets).nrmse
    naive = score(prepared.test.targets, baseline.predict(prepared.test), targets).nrmse
    assert learned < naive


def test_mlp_depth_follows_num_layers(prepared: PreparedData) -> None:
    def linear_layers(num_layers: int) -> int:
        model = model_class("MLP")(
            prepared.spec,
            prepared.input_scaler,
            prepared.target_scaler,
            hidden_size=8,
            num_layers=num_layers,
        )
        assert isinstance(model, TorchForecaster)
        module = model._build_module()
        return sum(isinstance(m, torch.nn.Linear) for m in module.modules())

    assert linear_layers(1) == 2
    assert linear_layers(4) == 5


def test_time_features_widen_the_input_and_export(tmp_path: Path) -> None:
    spec = FeatureSpec(time_features=("hour_sin", "hour_cos"))
    data = build_prepared(spec)
    model = fit(data, "GRU", max_epochs=1)
    model.save(tmp_path)
    assert data.test is not None
    encoded = model.encode(data.test)
    assert encoded.shape[-1] == 13
    np.testing.assert_allclose(
        OnnxSession(tmp_path).run(encoded), model.predict_scaled(encoded), atol=1e-5
    )


def test_target_weights_and_huber_loss_train(prepared: PreparedData) -> None:
    model = fit(
        prepared, "LSTM", loss="huber", target_weights={"down": 3.0, "up": 3.0}, max_epochs=2
    )
    assert model.metadata["epochs_run"] == 2


@pytest.mark.parametrize(
    "params",
    [{"loss": "mae"}, {"hidden_size": 0}, {"dropout": 1.0}, {"target_weights": {"nope": 1.0}}],
)
def test_bad_params_are_rejected(prepared: PreparedData, params: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        model_class("LSTM")(prepared.spec, prepared.input_scaler, prepared.target_scaler, **params)


# ---- ENSEMBLE ------------------------------------------------------------------------------


def test_greedy_weights_prefer_the_accurate_member() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(1.0, 2.0, size=(200, 1, 5))
    good = actual + 0.01 * rng.standard_normal(actual.shape)
    bad = actual + 1.0
    weights, value = greedy_weights(np.stack([bad, good]), actual, LTE_TARGETS, 10)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[1] > weights[0]
    assert value < score(actual, bad, LTE_TARGETS).nrmse


def test_ensemble_round_trip_and_weights(prepared: PreparedData, tmp_path: Path) -> None:
    assert prepared.test is not None
    model = model_class("ENSEMBLE")(
        prepared.spec,
        prepared.input_scaler,
        prepared.target_scaler,
        seed=1,
        members=["RIDGE", "LSTM"],
        member_params={"LSTM": TINY},
        weighting="greedy",
    ).fit(prepared.train, prepared.validation)
    weights = model.metadata["weights"]
    assert len(weights) == 2
    assert sum(weights) == pytest.approx(1.0)
    # The blend is never worse on validation than its best member (weight 1 on it is allowed;
    # that blend is computed as 1*a + 0*b, equal to a up to rounding).
    best_member = min(model.metadata["member_validation_nrmse"])
    assert model.metadata["validation_nrmse"] <= best_member * (1 + 1e-12)
    model.save(tmp_path)
    loaded = load_model(tmp_path)
    np.testing.assert_array_equal(loaded.predict(prepared.test), model.predict(prepared.test))


def test_uniform_ensemble_averages_its_members(prepared: PreparedData) -> None:
    assert prepared.test is not None
    model = model_class("ENSEMBLE")(
        prepared.spec,
        prepared.input_scaler,
        prepared.target_scaler,
        seed=5,
        members=["LSTM", "LSTM"],
        member_params=[{**TINY, "loss": "mse"}, {**TINY, "loss": "huber"}],
        weighting="uniform",
    ).fit(prepared.train, prepared.validation)
    assert isinstance(model, Ensemble)
    assert [m.seed for m in model.members] == [5, 6]
    assert [m.params["loss"] for m in model.members] == ["mse", "huber"]
    expected = np.mean([m.predict(prepared.test) for m in model.members], axis=0)
    np.testing.assert_allclose(model.predict(prepared.test), expected)


def test_default_ensemble_is_an_lstm_and_an_mlp_without_dropout(prepared: PreparedData) -> None:
    model = model_class("ENSEMBLE")(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    assert isinstance(model, Ensemble)
    assert model.params["members"] == ["LSTM", "MLP"]
    assert model.params["member_params"] == [{}, {"dropout": 0.0}]


@pytest.mark.parametrize(
    "params",
    [
        {"members": []},
        {"weighting": "best"},
        {"member_params": [{}]},
        {"members": ["ENSEMBLE"]},
        {"members": ["RIDGE"], "member_params": {"GRU": {}}},
    ],
)
def test_ensemble_rejects_bad_members(prepared: PreparedData, params: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        model_class("ENSEMBLE")(
            prepared.spec, prepared.input_scaler, prepared.target_scaler, **params
        )
