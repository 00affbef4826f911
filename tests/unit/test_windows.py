"""Vectorised windowing agrees with the obvious loop, and carries the right timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flts.data import FeatureSpec, Windows, last_window, make_windows
from flts.data.windows import time_features
from flts.exceptions import DataValidationError


def _spec(lags: int, horizon: int, n_inputs: int, n_targets: int) -> FeatureSpec:
    inputs = tuple(f"f{i}" for i in range(n_inputs))
    return FeatureSpec(inputs=inputs, targets=inputs[-n_targets:], lags=lags, horizon=horizon)


def _naive(values: np.ndarray, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    positions = spec.target_positions
    for start in range(len(values) - spec.lags - spec.horizon + 1):
        xs.append(values[start : start + spec.lags])
        end = start + spec.lags
        ys.append(values[end : end + spec.horizon][:, positions])
    return np.array(xs), np.array(ys)


@given(
    rows=st.integers(2, 60),
    lags=st.integers(1, 8),
    horizon=st.integers(1, 4),
    n_inputs=st.integers(1, 5),
    seed=st.integers(0, 1000),
)
def test_matches_naive_loop(rows: int, lags: int, horizon: int, n_inputs: int, seed: int) -> None:
    spec = _spec(lags, horizon, n_inputs, min(2, n_inputs))
    values = np.random.default_rng(seed).normal(size=(rows, n_inputs))
    times = pd.date_range("2020-01-01", periods=rows, freq="2min").to_numpy()
    if rows < lags + horizon:
        with pytest.raises(DataValidationError, match="too few rows"):
            make_windows(values, times, spec)
        return
    windows = make_windows(values, times, spec)
    x, y = _naive(values, spec)
    np.testing.assert_array_equal(windows.x, x)
    np.testing.assert_array_equal(windows.targets, y)
    # Target times follow the last input time by 1..horizon steps.
    steps = (windows.target_times - windows.input_times[:, -1:]) / np.timedelta64(2, "m")
    np.testing.assert_array_equal(steps, np.broadcast_to(np.arange(1, horizon + 1), steps.shape))


def test_last_window_extends_the_grid() -> None:
    spec = _spec(3, 2, 2, 1)
    values = np.arange(10.0).reshape(5, 2)
    times = pd.date_range("2020-01-01", periods=5, freq="2min").to_numpy()
    window = last_window(values, times, spec)
    np.testing.assert_array_equal(window.x[0], values[-3:])
    assert window.y is None
    assert list(pd.DatetimeIndex(window.target_times[0])) == [
        pd.Timestamp("2020-01-01 00:10"),
        pd.Timestamp("2020-01-01 00:12"),
    ]


def test_take_and_missing_targets() -> None:
    spec = _spec(2, 1, 1, 1)
    times = pd.date_range("2020-01-01", periods=6, freq="2min").to_numpy()
    windows = make_windows(np.arange(6.0)[:, None], times, spec)
    subset = windows.take(np.array([2, 0]))
    np.testing.assert_array_equal(subset.targets[:, 0, 0], [4.0, 2.0])
    with pytest.raises(DataValidationError, match="no targets"):
        _ = Windows(windows.x, None, windows.input_times, windows.target_times).targets


def test_time_features_are_cyclic() -> None:
    times = pd.to_datetime(["2020-01-01 06:00", "2020-01-02 06:00", "2020-01-01 18:00"])
    encoded = time_features(times.to_numpy(), ("hour_sin", "hour_cos"))
    np.testing.assert_allclose(encoded[0], encoded[1], atol=1e-12)  # same hour, next day
    np.testing.assert_allclose(encoded[0], [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(encoded[2], [-1.0, 0.0], atol=1e-12)
