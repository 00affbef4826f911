"""The recipe: split, clip and scale on the training part only; no leakage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from flts.data import FeatureSpec, Recipe, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import ConfigurationError, DataValidationError


def test_split_is_chronological_with_ceil(table, spec: FeatureSpec) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare(table, spec=spec)
    cut = math.ceil(0.8 * len(table))
    assert len(prepared.train) == cut - spec.lags - spec.horizon + 1
    assert len(prepared.validation) == len(table) - cut - spec.lags - spec.horizon + 1
    assert prepared.train.target_times.max() < prepared.validation.input_times.min()


def test_scalers_and_clip_bounds_ignore_validation_and_test(spec: FeatureSpec) -> None:
    """Changing everything after the split point, and the test file, changes no fitted state."""
    frame = synthetic_traffic(1_000, seed=3)
    test = validate_frame(synthetic_traffic(200, start="2018-02-07", seed=4), spec)
    base = prepare(validate_frame(frame, spec), test, spec=spec)

    tampered = frame.copy()
    cut = math.ceil(0.8 * len(frame))
    tampered.loc[cut:, "down"] *= 1_000.0
    tampered_test = synthetic_traffic(200, start="2018-02-07", seed=99)
    tampered_test["up"] *= 50.0
    other = prepare(validate_frame(tampered, spec), validate_frame(tampered_test, spec), spec=spec)

    assert other.input_scaler == base.input_scaler
    assert other.clip_bounds == base.clip_bounds
    np.testing.assert_array_equal(other.train.x, base.train.x)
    assert not np.array_equal(other.validation.x, base.validation.x)


def test_clipping_touches_only_the_training_part(table, spec: FeatureSpec) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare(table, spec=spec, recipe=Recipe(clip_percentiles=(10.0, 90.0)))
    down = spec.inputs.index("down")
    low, high = prepared.clip_bounds["down"]
    assert prepared.train.x[..., down].min() >= low
    assert prepared.train.x[..., down].max() <= high
    # Validation keeps its raw extremes: the model must face real data.
    assert (
        prepared.validation.x[..., down].max() > high
        or prepared.validation.x[..., down].min() < low
    )
    # Unclipped columns are untouched.
    raw_users = table.frame["rnti_count"].to_numpy()
    users = spec.inputs.index("rnti_count")
    np.testing.assert_array_equal(prepared.train.x[:, 0, users], raw_users[: len(prepared.train)])


def test_missing_values_are_filled_or_rejected(spec: FeatureSpec) -> None:
    frame = synthetic_traffic(600, seed=5, missing_fraction=0.05)
    table = validate_frame(frame, spec)
    prepared = prepare(table, spec=spec)
    assert np.isfinite(prepared.train.x).all()
    with pytest.raises(DataValidationError, match="missing values"):
        prepare(table, spec=spec, recipe=Recipe(fill_na=None))


def test_too_short_for_a_validation_window(spec: FeatureSpec) -> None:
    table = validate_frame(synthetic_traffic(40, seed=6), spec)
    with pytest.raises(DataValidationError, match="too few rows to split"):
        prepare(table, spec=spec)


def test_clip_columns_must_be_inputs(table) -> None:  # type: ignore[no-untyped-def]
    spec = FeatureSpec(inputs=("down", "up"), targets=("down",))
    with pytest.raises(ConfigurationError, match=r"clips columns \['rb_down', 'rb_up'\]"):
        prepare(table, spec=spec)


def test_spec_rejects_inconsistent_columns() -> None:
    with pytest.raises(ValueError, match="not among the inputs"):
        FeatureSpec(inputs=("a",), targets=("b",))
    with pytest.raises(ValueError, match="repeat columns"):
        FeatureSpec(inputs=("a", "a"), targets=("a",))
    with pytest.raises(ValueError, match="not a duration"):
        FeatureSpec(frequency="often")


def test_test_windows_are_built_from_the_test_file(prepared) -> None:  # type: ignore[no-untyped-def]
    assert prepared.test is not None
    first = pd.Timestamp(prepared.test.input_times[0, 0])
    assert first > pd.Timestamp(prepared.validation.target_times.max())
