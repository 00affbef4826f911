"""Prediction intervals: calibrated on validation only, nested, non-negative, saved as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flts.data import FeatureSpec, PreparedData, prepare
from flts.exceptions import DataValidationError
from flts.models import load_model, model_class
from flts.models.intervals import (
    INTERVALS_FILE,
    MAX_LEVELS,
    IntervalCalibration,
    check_levels,
    level_key,
)
from helpers import synthetic_tables

LEVELS = (50.0, 80.0, 95.0)


def _prepared(horizon: int) -> PreparedData:
    spec = FeatureSpec(horizon=horizon)
    train, test = synthetic_tables(3_000, 2_400, seed=4, spec=spec)
    return prepare(train, test, spec=spec)


@pytest.fixture(scope="module")
def prepared_h5() -> PreparedData:
    return _prepared(5)


@pytest.mark.parametrize("model_type", ["PERSISTENCE", "SEASONAL_NAIVE", "RIDGE"])
def test_intervals_at_horizon_5_are_nested_non_negative_and_hold_the_forecast(
    prepared_h5: PreparedData, model_type: str
) -> None:
    test = prepared_h5.test
    assert test is not None
    model = model_class(model_type)(
        prepared_h5.spec, prepared_h5.input_scaler, prepared_h5.target_scaler
    ).fit(prepared_h5.train, prepared_h5.validation)
    forecast = model.predict(test)
    bands = model.intervals(test, forecast, LEVELS)
    assert set(bands) == set(LEVELS)
    previous = None
    for level in LEVELS:
        lower, upper = bands[level]
        assert lower.shape == upper.shape == forecast.shape == (len(test), 5, 5)
        served = np.maximum(forecast, 0.0)
        assert (lower >= 0).all()
        assert (lower <= served).all()
        assert (served <= upper).all()
        if previous is not None:  # a wider level contains the narrower one
            assert (lower <= previous[0]).all()
            assert (upper >= previous[1]).all()
        previous = (lower, upper)


def test_calibration_uses_validation_windows_only(prepared_h5: PreparedData) -> None:
    model = model_class("RIDGE")(
        prepared_h5.spec, prepared_h5.input_scaler, prepared_h5.target_scaler
    ).fit(prepared_h5.train, prepared_h5.validation)
    assert model.calibration is not None
    assert model.calibration.samples == len(prepared_h5.validation)
    # Recalibrating by hand on the validation split reproduces it exactly.
    validation = prepared_h5.validation
    again = IntervalCalibration.fit(
        model.target_history(validation),
        validation.targets,
        model.predict(validation),
        prepared_h5.spec.targets,
    )
    assert again == model.calibration


def test_coverage_is_near_nominal_on_exchangeable_data() -> None:
    rng = np.random.default_rng(0)
    n, lags = 4_000, 10
    history = rng.gamma(4.0, 10.0, size=(2 * n, lags, 2))
    forecast = history[:, -1:, :].copy()
    actual = forecast + rng.normal(0, 1.0, size=forecast.shape) * (1 + history[:, -1:, :] / 40)
    calibration = IntervalCalibration.fit(history[:n], actual[:n], forecast[:n], ("a", "b"))
    for level in (80.0, 95.0):
        lower, upper = calibration.bounds(history[n:], forecast[n:], level)
        inside = (actual[n:] >= lower) & (actual[n:] <= upper)
        assert abs(inside.mean() - level / 100) < 0.02, (level, inside.mean())


def test_calibration_round_trips_as_json_with_the_model(
    prepared_h5: PreparedData, tmp_path: Path
) -> None:
    test = prepared_h5.test
    assert test is not None
    model = model_class("RIDGE")(
        prepared_h5.spec, prepared_h5.input_scaler, prepared_h5.target_scaler
    ).fit(prepared_h5.train, prepared_h5.validation)
    model.save(tmp_path / "m")
    document = json.loads((tmp_path / "m" / INTERVALS_FILE).read_text())
    assert document["samples"] == len(prepared_h5.validation)
    loaded = load_model(tmp_path / "m")
    forecast = model.predict(test)
    for level in (80.0, 95.0):
        np.testing.assert_allclose(
            loaded.intervals(test, forecast, (level,))[level],
            model.intervals(test, forecast, (level,))[level],
        )


def test_a_model_saved_without_calibration_refuses_intervals(
    prepared_h5: PreparedData, tmp_path: Path
) -> None:
    test = prepared_h5.test
    assert test is not None
    model = model_class("PERSISTENCE")(
        prepared_h5.spec, prepared_h5.input_scaler, prepared_h5.target_scaler
    ).fit(prepared_h5.train, prepared_h5.validation)
    model.save(tmp_path / "m")
    (tmp_path / "m" / INTERVALS_FILE).unlink()
    loaded = load_model(tmp_path / "m")
    with pytest.raises(DataValidationError, match="without interval calibration"):
        loaded.intervals(test, loaded.predict(test), (80.0,))


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ([0], "between 0 and 100"),
        ([100], "between 0 and 100"),
        ([-5], "between 0 and 100"),
        ([True], "between 0 and 100"),
        (["80"], "between 0 and 100"),
        ([80, 80], "unique"),
        (list(range(1, MAX_LEVELS + 2)), f"at most {MAX_LEVELS}"),
    ],
)
def test_bad_levels_are_refused_with_the_reason(levels: list[object], message: str) -> None:
    with pytest.raises(DataValidationError, match=message):
        check_levels(levels)  # type: ignore[arg-type]


def test_level_keys() -> None:
    assert check_levels([80, 97.5]) == (80.0, 97.5)
    assert [level_key(level) for level in (80.0, 97.5)] == ["80", "97.5"]
