"""Baselines and ridge through the Forecaster interface: behaviour and save/load round trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flts.data import PreparedData
from flts.evaluation import score
from flts.exceptions import (
    ConfigurationError,
    DependencyMissingError,
    FeatureMismatchError,
    ModelNotFittedError,
)
from flts.models import MODEL_TYPES, Forecaster, load_model, model_class, parse_model_types
from flts.models.registry import _Entry
from flts.models.ridge import Ridge

CHEAP = ["PERSISTENCE", "SEASONAL_NAIVE", "RIDGE"]


def _fit(prepared: PreparedData, model_type: str, **params: Any) -> Forecaster:
    cls = model_class(model_type)
    model = cls(prepared.spec, prepared.input_scaler, prepared.target_scaler, **params)
    return model.fit(prepared.train, prepared.validation)


@pytest.mark.parametrize("model_type", CHEAP)
def test_save_load_round_trip_predicts_identically(
    prepared: PreparedData, model_type: str, tmp_path: Path
) -> None:
    assert prepared.test is not None
    model = _fit(prepared, model_type)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    assert loaded.spec == model.spec
    assert loaded.params == model.params
    np.testing.assert_array_equal(loaded.predict(prepared.test), model.predict(prepared.test))
    assert not list((tmp_path / "m").glob("*.pkl"))


def test_persistence_repeats_the_last_row(prepared: PreparedData) -> None:
    assert prepared.test is not None
    prediction = _fit(prepared, "PERSISTENCE").predict(prepared.test)
    last = prepared.test.x[:, -1, prepared.spec.target_positions]
    np.testing.assert_array_equal(prediction[:, 0], last)


def test_seasonal_naive_uses_the_value_one_season_earlier(prepared: PreparedData) -> None:
    assert prepared.test is not None
    model = _fit(prepared, "SEASONAL_NAIVE", season="1h")
    prediction = model.predict(prepared.test)
    # For a target time t, the answer is the observed value at t - 1h (30 rows earlier).
    series = pd.DataFrame(
        prepared.test.x[:, 0, prepared.spec.target_positions],
        index=pd.DatetimeIndex(prepared.test.input_times[:, 0]),
    )
    i = 100
    wanted = pd.Timestamp(prepared.test.target_times[i, 0]) - pd.Timedelta("1h")
    np.testing.assert_array_equal(prediction[i, 0], series.loc[wanted].to_numpy())


def test_ridge_beats_persistence_and_picks_alpha_on_validation(prepared: PreparedData) -> None:
    assert prepared.test is not None
    ridge = _fit(prepared, "RIDGE")
    persistence = _fit(prepared, "PERSISTENCE")
    targets = prepared.spec.targets
    ridge_nrmse = score(prepared.test.targets, ridge.predict(prepared.test), targets).nrmse
    base_nrmse = score(prepared.test.targets, persistence.predict(prepared.test), targets).nrmse
    assert ridge_nrmse < base_nrmse
    search = ridge.metadata["alpha_search"]
    best = min(search, key=lambda entry: entry["validation_nrmse"])
    assert ridge.metadata["alpha"] == best["alpha"]


def test_ridge_matches_the_normal_equations(prepared: PreparedData) -> None:
    ridge = _fit(prepared, "RIDGE", alphas=[3.0])
    assert isinstance(ridge, Ridge)
    X = ridge.encode(prepared.train).reshape(len(prepared.train), -1)
    Y = ridge.scaled_targets(prepared.train).reshape(len(prepared.train), -1)
    Xc, Yc = X - X.mean(axis=0), Y - Y.mean(axis=0)
    coef = np.linalg.solve(Xc.T @ Xc + 3.0 * np.eye(X.shape[1]), Xc.T @ Yc)
    np.testing.assert_allclose(ridge.weights[0], coef, rtol=1e-6, atol=1e-8)


def test_predict_before_fit_and_bad_windows(prepared: PreparedData) -> None:
    cls = model_class("RIDGE")
    model = cls(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    with pytest.raises(ModelNotFittedError):
        model.predict(prepared.validation)
    model.fit(prepared.train, prepared.validation)
    narrow = prepared.validation.take(slice(0, 5))
    narrow = type(narrow)(narrow.x[:, :, :3], None, narrow.input_times, narrow.target_times)
    with pytest.raises(FeatureMismatchError, match="do not fit the feature spec"):
        model.predict(narrow)


def test_unknown_params_and_model_types_are_rejected(prepared: PreparedData) -> None:
    with pytest.raises(ConfigurationError, match="does not accept parameters"):
        model_class("RIDGE")(prepared.spec, prepared.input_scaler, prepared.target_scaler, depth=3)
    with pytest.raises(ConfigurationError, match="unknown model type 'XGB'"):
        model_class("XGB")
    assert parse_model_types(" ridge,Persistence ") == ["RIDGE", "PERSISTENCE"]
    with pytest.raises(ConfigurationError, match="unknown model types"):
        parse_model_types("RIDGE,nope")


def test_missing_extra_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        MODEL_TYPES, "FAKE", _Entry("flts_missing_module:Thing", "torch", "flts_missing_module")
    )
    with pytest.raises(DependencyMissingError, match=r"pip install 'flts\[torch\]'"):
        model_class("FAKE")


def test_load_rejects_a_directory_without_manifest(tmp_path: Path) -> None:
    from flts.exceptions import ModelError

    with pytest.raises(ModelError, match="not a saved FLTS model"):
        load_model(tmp_path)
