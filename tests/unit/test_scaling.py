"""Min-max scaling: exact round trips, constant columns, JSON persistence."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flts.data import MinMaxScaler
from flts.exceptions import ConfigurationError, FeatureMismatchError

COLUMNS = ("a", "b", "c")


def test_maps_training_range_onto_unit_interval() -> None:
    values = np.array([[0.0, 10.0, -5.0], [4.0, 30.0, 5.0], [2.0, 20.0, 0.0]])
    scaler = MinMaxScaler.fit(values, COLUMNS)
    scaled = scaler.transform(values)
    np.testing.assert_allclose(scaled.min(axis=0), 0.0)
    np.testing.assert_allclose(scaled.max(axis=0), 1.0)
    np.testing.assert_allclose(scaled[2], [0.5, 0.5, 0.5])


def test_constant_column_never_divides_by_zero() -> None:
    values = np.array([[1.0, 7.0, 0.0], [2.0, 7.0, 1.0]])
    scaler = MinMaxScaler.fit(values, COLUMNS)
    with np.errstate(all="raise"):
        scaled = scaler.transform(values)
        restored = scaler.inverse_transform(scaled)
        unseen = scaler.transform(np.array([[1.5, 9.0, 0.5]]))
    assert np.all(scaled[:, 1] == 0.0)
    np.testing.assert_array_equal(restored, values)
    assert np.isfinite(unseen).all()


def test_json_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    scaler = MinMaxScaler.fit(rng.normal(size=(50, 3)) * 1e8, COLUMNS)
    again = MinMaxScaler.from_json(scaler.to_json())
    assert again == scaler
    probe = rng.normal(size=(4, 3))
    np.testing.assert_array_equal(again.transform(probe), scaler.transform(probe))


def test_subset_keeps_the_fitted_bounds() -> None:
    scaler = MinMaxScaler.fit(np.array([[0.0, 10.0, 100.0], [1.0, 20.0, 300.0]]), COLUMNS)
    targets = scaler.subset(["c", "a"])
    np.testing.assert_allclose(targets.transform(np.array([[200.0, 0.5]])), [[0.5, 0.5]])


def test_nan_is_ignored_when_fitting_but_all_nan_is_rejected() -> None:
    values = np.array([[np.nan, 1.0, 2.0], [3.0, 4.0, 5.0], [1.0, 2.0, 3.0]])
    assert MinMaxScaler.fit(values, COLUMNS).minimum[0] == 1.0
    values[:, 2] = np.nan
    with pytest.raises(ConfigurationError, match=r"no finite values in \['c'\]"):
        MinMaxScaler.fit(values, COLUMNS)


def test_wrong_width_is_a_feature_mismatch() -> None:
    scaler = MinMaxScaler.fit(np.ones((2, 3)), COLUMNS)
    with pytest.raises(FeatureMismatchError, match="expected 3 columns"):
        scaler.transform(np.ones((2, 4)))


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(arrays(np.float64, st.tuples(st.integers(1, 30), st.just(3)), elements=finite))
def test_inverse_undoes_transform(values: np.ndarray) -> None:
    scaler = MinMaxScaler.fit(values, COLUMNS)
    restored = scaler.inverse_transform(scaler.transform(values))
    np.testing.assert_allclose(restored, values, rtol=1e-9, atol=1e-9 * (1 + np.abs(values).max()))
