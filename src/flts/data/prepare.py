"""Apply a recipe to validated tables: fill, split, clip, fit scalers, build windows.

Pure functions of their inputs. Steps follow the published protocol (docs/architecture.md, §5);
each step's parameters come from the :class:`~flts.data.spec.Recipe`. Everything that is
*fitted* (clip bounds, scalers) sees the training part only, so changing validation or test
data can never change it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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


@dataclass(frozen=True)
class Splits:
    """The recipe's output as tables (what preprocessing persists as Parquet): each split is
    indexed by time with exactly ``spec.inputs`` as columns; missing cells are filled, and
    the training part is clipped. Windows are built from these, within each split."""

    spec: FeatureSpec
    recipe: Recipe
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame | None
    input_scaler: MinMaxScaler
    clip_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)

    def windows(self) -> PreparedData:
        """Window every split (the form models train and are scored on)."""
        return PreparedData(
            spec=self.spec,
            recipe=self.recipe,
            input_scaler=self.input_scaler,
            target_scaler=self.input_scaler.subset(self.spec.targets),
            train=windows_from_frame(self.train, self.spec),
            validation=windows_from_frame(self.validation, self.spec),
            test=None if self.test is None else windows_from_frame(self.test, self.spec),
            clip_bounds=self.clip_bounds,
        )


def windows_from_frame(frame: pd.DataFrame, spec: FeatureSpec) -> Windows:
    """Windows of one contiguous split stored as a time-indexed table."""
    return make_windows(
        frame[list(spec.inputs)].to_numpy(np.float64),
        pd.DatetimeIndex(frame.index).as_unit("ns").to_numpy(),
        spec,
    )


def split(
    train: TrafficTable,
    test: TrafficTable | None = None,
    *,
    spec: FeatureSpec | None = None,
    recipe: Recipe | None = None,
) -> Splits:
    """Apply the recipe to a training table (and optionally a held-out test table).

    Steps: fill NaNs; chronological split of the training table into train/validation;
    clip the training part to percentiles of itself; fit the min-max scaler on the (clipped)
    training part. Validation and test are never clipped or used for fitting: they are what
    the model will face.
    """
    spec = spec or FeatureSpec()
    recipe = recipe or Recipe()
    columns = list(spec.inputs)
    values = fill_missing(train.frame[columns].to_numpy(np.float64), recipe, spec.inputs)
    cut = split_point(len(values), recipe)
    window = spec.lags + spec.horizon
    if cut < window or len(values) - cut < window:
        raise DataValidationError(
            f"too few rows to split: {len(values)} rows give {cut} train and "
            f"{len(values) - cut} validation rows; each part needs at least {window} "
            f"(lags {spec.lags} + horizon {spec.horizon})"
        )
    bounds = clip_bounds(values[:cut], recipe, spec)
    train_values = apply_clip(values[:cut], bounds, spec)
    index = train.frame.index

    test_frame = None
    if test is not None:
        test_values = fill_missing(test.frame[columns].to_numpy(np.float64), recipe, spec.inputs)
        test_frame = pd.DataFrame(test_values, index=test.frame.index, columns=columns)
    return Splits(
        spec=spec,
        recipe=recipe,
        train=pd.DataFrame(train_values, index=index[:cut], columns=columns),
        validation=pd.DataFrame(values[cut:], index=index[cut:], columns=columns),
        test=test_frame,
        input_scaler=MinMaxScaler.fit(train_values, spec.inputs),
        clip_bounds=bounds,
    )


def prepare(
    train: TrafficTable,
    test: TrafficTable | None = None,
    *,
    spec: FeatureSpec | None = None,
    recipe: Recipe | None = None,
) -> PreparedData:
    """:func:`split`, then windows within each split: the data models train on."""
    return split(train, test, spec=spec, recipe=recipe).windows()
