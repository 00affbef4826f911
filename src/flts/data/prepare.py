"""Apply a recipe to validated tables: fill, split, clip, fit scalers, build windows.

Pure functions of their inputs. The order of steps is the published protocol (DESIGN.md §6);
each step's parameters come from the :class:`~flts.data.spec.Recipe`. Everything that is
*fitted* (clip bounds, scalers) sees the training part only, so changing validation or test
data can never change it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from flts.data.reader import TrafficTable
from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec, Recipe
from flts.data.windows import Windows, make_windows
from flts.exceptions import ConfigurationError, DataValidationError


@dataclass(frozen=True)
class PreparedData:
    """Everything a trainer needs: windows per split in original units plus fitted state."""

    spec: FeatureSpec
    recipe: Recipe
    input_scaler: MinMaxScaler
    target_scaler: MinMaxScaler
    train: Windows
    validation: Windows
    test: Windows | None
    clip_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)


def fill_missing(values: np.ndarray, recipe: Recipe, columns: tuple[str, ...]) -> np.ndarray:
    """Replace NaNs with ``recipe.fill_na``; with ``fill_na=None`` missing cells are an error."""
    missing = np.isnan(values)
    if not missing.any():
        return values
    if recipe.fill_na is None:
        counts = {c: int(n) for c, n in zip(columns, missing.sum(axis=0), strict=True) if n}
        raise DataValidationError(f"missing values {counts} and the recipe has no fill_na")
    return np.where(missing, recipe.fill_na, values)


def split_point(n_rows: int, recipe: Recipe) -> int:
    """Rows in the training part: ``ceil(train_fraction * n)`` (the published convention)."""
    return math.ceil(recipe.train_fraction * n_rows)


def clip_bounds(
    train_values: np.ndarray, recipe: Recipe, spec: FeatureSpec
) -> dict[str, tuple[float, float]]:
    """Per-column percentile bounds computed on the training part."""
    unknown = [c for c in recipe.clip_columns if c not in spec.inputs]
    if unknown:
        raise ConfigurationError(f"recipe clips columns {unknown} that are not inputs")
    low, high = recipe.clip_percentiles
    bounds = {}
    for column in recipe.clip_columns:
        series = train_values[:, spec.inputs.index(column)]
        lo, hi = np.percentile(series, [low, high])
        bounds[column] = (float(lo), float(hi))
    return bounds


def apply_clip(
    values: np.ndarray, bounds: dict[str, tuple[float, float]], spec: FeatureSpec
) -> np.ndarray:
    clipped = values.copy()
    for column, (lo, hi) in bounds.items():
        i = spec.inputs.index(column)
        clipped[:, i] = np.clip(clipped[:, i], lo, hi)
    return clipped


def prepare(
    train: TrafficTable,
    test: TrafficTable | None = None,
    *,
    spec: FeatureSpec | None = None,
    recipe: Recipe | None = None,
) -> PreparedData:
    """Turn a training table (and optionally a held-out test table) into windows.

    Steps: fill NaNs; chronological split of the training table into train/validation;
    clip the training part to percentiles of itself; fit min-max scalers on the (clipped)
    training part; build windows within each split. Validation and test are never clipped or
    used for fitting: they are what the model will face.
    """
    spec = spec or FeatureSpec()
    recipe = recipe or Recipe()
    values = fill_missing(train.frame[list(spec.inputs)].to_numpy(np.float64), recipe, spec.inputs)
    times = train.times.to_numpy()
    cut = split_point(len(values), recipe)
    window = spec.lags + spec.horizon
    if cut < window or len(values) - cut < window:
        raise DataValidationError(
            f"too few rows to split: {len(values)} rows give {cut} train and "
            f"{len(values) - cut} validation rows; each part needs at least {window} "
            f"(lags {spec.lags} + horizon {spec.horizon})"
        )
    train_values, validation_values = values[:cut], values[cut:]
    bounds = clip_bounds(train_values, recipe, spec)
    train_values = apply_clip(train_values, bounds, spec)

    input_scaler = MinMaxScaler.fit(train_values, spec.inputs)
    test_windows = None
    if test is not None:
        test_values = fill_missing(
            test.frame[list(spec.inputs)].to_numpy(np.float64), recipe, spec.inputs
        )
        test_windows = make_windows(test_values, test.times.to_numpy(), spec)
    return PreparedData(
        spec=spec,
        recipe=recipe,
        input_scaler=input_scaler,
        target_scaler=input_scaler.subset(spec.targets),
        train=make_windows(train_values, times[:cut], spec),
        validation=make_windows(validation_values, times[cut:], spec),
        test=test_windows,
        clip_bounds=bounds,
    )
