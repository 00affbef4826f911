"""The GLOBAL model type: one network over a group's stations, each station's model saved,
loaded and served on its own (torch, ONNX, the registry's loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from flts.data import FeatureSpec, PreparedData, split  # noqa: E402
from flts.exceptions import DataValidationError  # noqa: E402
from flts.models import load_model, model_class  # noqa: E402
from flts.models.global_mlp import GlobalForecaster, GroupFit, fit_group, in_memory  # noqa: E402
from flts.models.serving import OnnxGlobal, load_serving_model  # noqa: E402
from helpers import synthetic_tables  # noqa: E402

TINY: dict[str, Any] = {"hidden_size": 16, "num_layers": 2, "max_epochs": 5, "patience": 3}
STATIONS = ("A", "B", "C")


def station_data(seed: int, spec: FeatureSpec | None = None) -> PreparedData:
    """A synthetic station as preprocessing prepares it."""
    spec = spec or FeatureSpec()
    train, test = synthetic_tables(700, 560, seed=seed, spec=spec)
    return split(train, test, spec=spec).windows()


def scaled_station(seed: int, scale: float) -> PreparedData:
    """A station whose scalers are fitted on its own (scaled) data, as preprocessing does."""
    spec = FeatureSpec()
    train, test = synthetic_tables(700, 560, seed=seed, spec=spec)
    numeric = [c for c in train.frame.columns if c != spec.time_column]
    train.frame[numeric] = train.frame[numeric] * scale
    test.frame[numeric] = test.frame[numeric] * scale
    return split(train, test, spec=spec).windows()


@pytest.fixture(scope="module")
def group() -> tuple[dict[str, PreparedData], GroupFit]:
    members = {
        name: scaled_station(seed, 10.0**i)
        for i, (name, seed) in enumerate(zip(STATIONS, (1, 2, 3), strict=True))
    }
    fit = fit_group({k: in_memory(v) for k, v in members.items()}, params=TINY, seed=0)
    return members, fit


def test_registry_knows_global() -> None:
    assert model_class("global") is GlobalForecaster


def test_each_station_gets_its_own_index_scalers_and_forecasts(
    group: tuple[dict[str, PreparedData], GroupFit],
) -> None:
    members, fit = group
    models = {name: fit.forecaster(name, members[name]) for name in STATIONS}
    assert [m.params["station_index"] for m in models.values()] == [0, 1, 2]
    assert {m.params["stations"] for m in models.values()} == {3}
    # The same windows at two stations: other embedding, other scalers, other forecasts.
    windows = members["A"].validation
    a, b = models["A"].predict(windows), models["B"].predict(windows)
    assert not np.allclose(a, b)
    # The embedding alone tells stations apart: B's scalers with A's index differ from B.
    swapped = GlobalForecaster(
        members["B"].spec,
        members["B"].input_scaler,
        members["B"].target_scaler,
        **{**fit.params, "stations": 3, "station_index": 0},
    )
    swapped.module = fit.module_for("A")
    swapped.fitted = True
    assert not np.allclose(swapped.predict(windows), b)
    assert models["A"].calibration is not None
    assert models["C"].metadata["group_stations"] == 3
    assert models["C"].metadata["epochs_run"] >= 1


def test_save_load_and_onnx_predict_like_the_trainer(
    group: tuple[dict[str, PreparedData], GroupFit], tmp_path: Path
) -> None:
    members, fit = group
    model = fit.forecaster("B", members["B"])
    model.save(tmp_path / "B")
    windows = members["B"].validation
    expected = model.predict(windows)
    loaded = load_model(tmp_path / "B")
    assert isinstance(loaded, GlobalForecaster)
    np.testing.assert_array_equal(loaded.predict(windows), expected)
    served = load_serving_model(tmp_path / "B")
    assert isinstance(served, OnnxGlobal)
    np.testing.assert_allclose(served.predict(windows), expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
        served.predict(windows.take(slice(0, 1))), expected[:1], rtol=1e-4, atol=1e-3
    )
    bands = loaded.intervals(windows, expected, (80.0,))
    assert (bands[80.0][0] <= bands[80.0][1]).all()


def test_fit_on_one_station_is_a_group_of_one(tmp_path: Path) -> None:
    prepared = station_data(4)
    model = GlobalForecaster(
        prepared.spec, prepared.input_scaler, prepared.target_scaler, **TINY
    ).fit(prepared.train, prepared.validation)
    assert (model.params["stations"], model.params["station_index"]) == (1, 0)
    model.save(tmp_path / "m")
    np.testing.assert_array_equal(
        load_model(tmp_path / "m").predict(prepared.validation),
        model.predict(prepared.validation),
    )


def test_window_caps_bound_the_pooled_sample() -> None:
    members = {name: station_data(seed) for name, seed in zip(STATIONS, (1, 2, 3), strict=True)}
    fit = fit_group(
        {k: in_memory(v) for k, v in members.items()},
        params={
            **TINY,
            "max_epochs": 1,
            "max_windows_per_station": 100,
            "max_windows": 150,
            "max_validation_windows": 30,
        },
    )
    assert fit.metadata["pooled_train_windows"] == 3 * 50
    assert {fit.sampled[s] for s in STATIONS} == {(50, 10)}


def test_members_of_another_spec_are_refused() -> None:
    other = station_data(2, spec=FeatureSpec(lags=5))
    with pytest.raises(DataValidationError, match=r"\['B'\]"):
        fit_group({"A": lambda: station_data(1), "B": lambda: other}, params=TINY)
