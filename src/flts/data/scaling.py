"""Min-max scaling that is safe for constant features and persists as JSON (never a pickle).

The scaler is fitted on the training part only; the same fitted object scales validation, test
and every inference request, and inverse-transforms predictions (docs/architecture.md, rule 1).
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from flts.exceptions import ConfigurationError, FeatureMismatchError


class MinMaxScaler(BaseModel):
    """Per-column affine map of ``[min, max]`` onto ``[0, 1]``.

    A column with zero range (constant in training) maps to 0 and back to its constant: the
    divisor is replaced by 1, so neither direction ever divides by zero.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = "minmax"
    columns: tuple[str, ...]
    minimum: tuple[float, ...]
    maximum: tuple[float, ...]

    @model_validator(mode="after")
    def _lengths_match(self) -> MinMaxScaler:
        if not len(self.columns) == len(self.minimum) == len(self.maximum):
            raise ValueError("columns, minimum and maximum must have the same length")
        if any(not np.isfinite(v) for v in (*self.minimum, *self.maximum)):
            raise ValueError("scaler bounds must be finite")
        return self

    @classmethod
    def fit(cls, values: np.ndarray, columns: tuple[str, ...] | list[str]) -> MinMaxScaler:
        """Fit on a 2-D array ``(rows, columns)``; NaNs are ignored, all-NaN columns rejected."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(columns):
            raise ConfigurationError(
                f"scaler fit expects shape (rows, {len(columns)}), got {values.shape}"
            )
        if values.shape[0] == 0:
            raise ConfigurationError("cannot fit a scaler on zero rows")
        has_values = np.isfinite(values).any(axis=0)
        all_missing = [c for c, ok in zip(columns, has_values, strict=True) if not ok]
        if all_missing:
            raise ConfigurationError(f"cannot fit a scaler: no finite values in {all_missing}")
        return cls(
            columns=tuple(columns),
            minimum=tuple(float(v) for v in np.nanmin(values, axis=0)),
            maximum=tuple(float(v) for v in np.nanmax(values, axis=0)),
        )

    # Cached: a serving replica scales every request with the same bounds, and rebuilding
    # these arrays cost more than the scaling itself. Read-only, so no caller can corrupt them.
    @cached_property
    def _offset(self) -> np.ndarray:
        offset = np.asarray(self.minimum, dtype=np.float64)
        offset.flags.writeable = False
        return offset

    @cached_property
    def _scale(self) -> np.ndarray:
        span = np.asarray(self.maximum, dtype=np.float64) - self._offset
        scale = np.where(span > 0.0, span, 1.0)
        scale.flags.writeable = False
        return scale

    def _check_width(self, values: np.ndarray) -> None:
        if values.shape[-1] != len(self.columns):
            raise FeatureMismatchError(
                f"expected {len(self.columns)} columns {list(self.columns)}, got {values.shape[-1]}"
            )

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scale the last axis; works on ``(..., columns)`` arrays of any rank."""
        values = np.asarray(values, dtype=np.float64)
        self._check_width(values)
        scaled: np.ndarray = (values - self._offset) / self._scale
        return scaled

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        """Map scaled values back to original units (last axis = columns)."""
        values = np.asarray(values, dtype=np.float64)
        self._check_width(values)
        restored: np.ndarray = values * self._scale + self._offset
        return restored

    def subset(self, columns: tuple[str, ...] | list[str]) -> MinMaxScaler:
        """The same fitted bounds restricted to ``columns`` (e.g. targets out of inputs)."""
        index = [self.columns.index(c) for c in columns]
        return MinMaxScaler(
            columns=tuple(columns),
            minimum=tuple(self.minimum[i] for i in index),
            maximum=tuple(self.maximum[i] for i in index),
        )

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> MinMaxScaler:
        data: dict[str, Any] = json.loads(text)
        return cls.model_validate(data)

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    @classmethod
    def load(cls, path: Path) -> MinMaxScaler:
        return cls.from_json(path.read_text())
