"""ProphetForecaster on a small synthetic series with a strong daily cycle.

The series is 10-minute data (fewer rows than 2-minute data for the same number of days, so
Prophet fits in well under a second) with every LTE feature following the same daily shape,
peaking at noon, plus noise. One fitted model is shared by the module's tests.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

# The module itself, not prophet: it quiets prophet's import-time logging before importing it.
pytest.importorskip("flts.models.prophet", reason="needs the prophet extra")

from flts.data.prepare import PreparedData, prepare
from flts.data.reader import validate_frame
from flts.data.spec import LTE_FEATURES, FeatureSpec, Recipe
from flts.data.windows import Windows
from flts.exceptions import DependencyMissingError, ModelError
from flts.models.base import load_model
from flts.models.prophet import ProphetForecaster
from flts.models.registry import model_class

SPEC = FeatureSpec(frequency="10min", lags=6, horizon=3)
TRAIN_DAYS, TEST_DAYS = 6, 2
START = pd.Timestamp("2024-03-04 00:00:00")


def _frame(start: pd.Timestamp, days: int, rng: np.random.Generator) -> pd.DataFrame:
    """Rows on the spec's grid: level * (1 + 0.6 cos(angle from noon)) + noise, per feature."""
    times = pd.date_range(start, periods=days * 144, freq=SPEC.frequency)
    hours = times.hour + times.minute / 60.0
    cycle = np.cos(2.0 * np.pi * (hours.to_numpy() - 12.0) / 24.0)
    columns: dict[str, object] = {"time": times.strftime("%Y-%m-%d %H:%M:%S")}
    for i, name in enumerate(LTE_FEATURES):
        level = 10.0 ** (i % 4 + 1)
        noise = rng.normal(0.0, 0.1 * level, len(times))
        columns[name] = level * (1.0 + 0.6 * cycle) + noise
    return pd.DataFrame(columns)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    rng = np.random.default_rng(7)
    train = validate_frame(_frame(START, TRAIN_DAYS, rng), SPEC)
    test = validate_frame(_frame(START + pd.Timedelta(days=TRAIN_DAYS), TEST_DAYS, rng), SPEC)
    return prepare(train, test, spec=SPEC, recipe=Recipe())


@pytest.fixture(scope="module")
def model(data: PreparedData) -> ProphetForecaster:
    return ProphetForecaster(data.spec, data.input_scaler, data.target_scaler).fit(
        data.train, data.validation
    )


def _test(data: PreparedData) -> Windows:
    assert data.test is not None
    return data.test


def _rmse(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Per-target RMSE over windows and steps."""
    squared = ((actual - forecast) ** 2).reshape(-1, actual.shape[-1])
    return np.asarray(np.sqrt(squared.mean(axis=0)), dtype=np.float64)


def test_forecast_follows_the_daily_cycle(model: ProphetForecaster, data: PreparedData) -> None:
    test = _test(data)
    prediction = model.predict(test)
    assert prediction.shape == (len(test), SPEC.horizon, len(SPEC.targets))
    assert np.isfinite(prediction).all()
    # A constant forecast at the training mean knows the level but not the time of day.
    train_mean = data.train.targets.reshape(-1, len(SPEC.targets)).mean(axis=0)
    constant = np.broadcast_to(train_mean, prediction.shape)
    assert (_rmse(test.targets, prediction) < 0.6 * _rmse(test.targets, constant)).all()


def test_history_and_seasonality_choices_are_recorded(model: ProphetForecaster) -> None:
    # Train part: ceil(0.8 * 6 days) of rows, every one recovered from the overlapping windows.
    assert model.metadata["history_rows"] == int(np.ceil(0.8 * TRAIN_DAYS * 144))
    choices = model.metadata["choices"]
    assert [c["target"] for c in choices] == list(SPEC.targets)
    for choice in choices:
        # Every candidate setting, each scored with and without clipping.
        assert len(choice["trials"]) == 2 * len(model.params["candidates"])
        best = min(t["validation_rmse"] for t in choice["trials"])
        chosen = [
            t
            for t in choice["trials"]
            if (t["growth"], t["seasonality_mode"], t["clip"])
            == (choice["growth"], choice["seasonality_mode"], choice["clip"])
        ]
        assert chosen[0]["validation_rmse"] == best


def test_predict_answers_for_exactly_the_target_times_given(
    model: ProphetForecaster, data: PreparedData
) -> None:
    test = _test(data)
    prediction = model.predict(test)
    # Step h of window i and step 0 of window i+h forecast the same timestamp.
    for h in range(1, SPEC.horizon):
        np.testing.assert_array_equal(prediction[:-h, h], prediction[h:, 0])

    # Reordered windows with other inputs: the forecast depends on target_times only.
    order = np.random.default_rng(0).permutation(len(test))
    shuffled = Windows(
        x=np.zeros_like(test.x),
        y=None,
        input_times=test.input_times[order],
        target_times=test.target_times[order],
    )
    np.testing.assert_array_equal(model.predict(shuffled), prediction[order])

    # Half a day later is the other half of the cycle: forecasts move against the actuals.
    later = Windows(
        x=test.x,
        y=None,
        input_times=test.input_times,
        target_times=test.target_times + np.timedelta64(12, "h"),
    )
    shifted = model.predict(later)
    for k in range(len(SPEC.targets)):
        assert np.corrcoef(shifted[:, 0, k], test.targets[:, 0, k])[0, 1] < -0.5
        assert np.corrcoef(prediction[:, 0, k], test.targets[:, 0, k])[0, 1] > 0.5


def test_save_and_load_predict_identically(
    model: ProphetForecaster, data: PreparedData, tmp_path: Path
) -> None:
    model.save(tmp_path)
    saved = sorted(p.name for p in tmp_path.iterdir())
    per_target = [f"prophet_target_{k}.json" for k in range(len(SPEC.targets))]
    assert set(per_target) <= set(saved)
    assert all(name.endswith(".json") for name in saved)  # no pickles

    loaded = load_model(tmp_path)
    assert isinstance(loaded, ProphetForecaster)
    test = _test(data)
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))


def test_clipping_to_the_training_range_survives_save_and_load(
    data: PreparedData, tmp_path: Path
) -> None:
    forecaster = ProphetForecaster(
        data.spec,
        data.input_scaler,
        data.target_scaler,
        candidates=[{"growth": "linear", "seasonality_mode": "additive"}],
        clip="always",
    ).fit(data.train, data.validation)
    history = np.concatenate(
        [data.train.x[:, :, SPEC.target_positions], data.train.targets], axis=1
    ).reshape(-1, len(SPEC.targets))
    test = _test(data)
    # A year ahead the linear trend has drifted, so the clip bounds are what keeps it in range.
    far = Windows(
        x=test.x,
        y=None,
        input_times=test.input_times,
        target_times=test.target_times + np.timedelta64(365, "D"),
    )
    prediction = forecaster.predict(far).reshape(-1, len(SPEC.targets))
    assert (prediction >= history.min(axis=0)).all()
    assert (prediction <= history.max(axis=0)).all()
    assert (
        np.isclose(prediction, history.min(axis=0)).any()
        or np.isclose(prediction, history.max(axis=0)).any()
    )

    forecaster.save(tmp_path)
    np.testing.assert_array_equal(load_model(tmp_path).predict(far), forecaster.predict(far))


def test_fit_is_deterministic(data: PreparedData) -> None:
    def fitted() -> np.ndarray:
        forecaster = ProphetForecaster(
            data.spec,
            data.input_scaler,
            data.target_scaler,
            seed=3,
            candidates=[{"growth": "linear", "seasonality_mode": "additive"}],
            clip="never",
        )
        return forecaster.fit(data.train, data.validation).predict(_test(data))

    np.testing.assert_array_equal(fitted(), fitted())


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"candidates": [{"growth": "flat", "holidays": "ES"}]}, "holidays"),
        ({"clip": "sometimes"}, "sometimes"),
        ({"candidates": []}, "at least one"),
        ({"candidates": [{"growth": "exponential"}]}, "exponential"),
    ],
)
def test_bad_settings_are_rejected(
    data: PreparedData, params: dict[str, Any], message: str
) -> None:
    forecaster = ProphetForecaster(data.spec, data.input_scaler, data.target_scaler, **params)
    with pytest.raises(ModelError, match=message):
        forecaster.fit(data.train, data.validation)


def test_registry_builds_it_and_hints_when_prophet_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert model_class("prophet") is ProphetForecaster
    # Simulate an environment without the extra: the import fails and the registry says
    # which extra to install.
    monkeypatch.setitem(sys.modules, "prophet", None)
    monkeypatch.delitem(sys.modules, "flts.models.prophet")
    with pytest.raises(DependencyMissingError, match=r"flts\[prophet\]"):
        model_class("PROPHET")
