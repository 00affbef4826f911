"""The feature spec and the preprocessing recipe: the two pieces of configuration that define
what a model sees. Both are plain data (pydantic models) so they can be hashed, saved next to
every model and enforced again at inference.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Bump when the meaning of a FeatureSpec field changes; it is part of the config hash.
FEATURE_SPEC_VERSION = 1
#: Bump when ``prepare`` changes what it computes for the same recipe; part of the config hash.
RECIPE_VERSION = 1

#: The 11 raw features of the Barcelona LTE datasets, in the published order.
LTE_FEATURES: tuple[str, ...] = (
    "down",
    "up",
    "rnti_count",
    "mcs_down",
    "mcs_down_var",
    "mcs_up",
    "mcs_up_var",
    "rb_down",
    "rb_down_var",
    "rb_up",
    "rb_up_var",
)
#: The 5 targets of the published task (Perifanis et al. 2023).
LTE_TARGETS: tuple[str, ...] = ("rnti_count", "rb_down", "rb_up", "down", "up")
#: Columns whose training part is clipped to percentiles in the published protocol.
LTE_CLIPPED: tuple[str, ...] = ("rb_down", "rb_up", "down", "up")

TimeFeature = Literal["hour_sin", "hour_cos", "dow_sin", "dow_cos"]


class FeatureSpec(BaseModel):
    """What goes into a model and what comes out, saved with every model.

    Inputs are addressed by name, never by position: at inference the caller's columns are
    reordered to ``inputs`` and anything missing is rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = FEATURE_SPEC_VERSION
    time_column: str = "time"
    inputs: tuple[str, ...] = LTE_FEATURES
    targets: tuple[str, ...] = LTE_TARGETS
    lags: int = Field(default=10, ge=1, le=10_000)
    horizon: int = Field(default=1, ge=1, le=1_000)
    frequency: str = "2min"
    time_features: tuple[TimeFeature, ...] = ()

    @field_validator("frequency")
    @classmethod
    def _frequency_is_a_duration(cls, value: str) -> str:
        try:
            delta = pd.to_timedelta(value)
        except ValueError as exc:
            raise ValueError(f"frequency {value!r} is not a duration like '2min'") from exc
        if delta <= pd.Timedelta(0):
            raise ValueError(f"frequency {value!r} must be positive")
        return value

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> FeatureSpec:
        for name, columns in (("inputs", self.inputs), ("targets", self.targets)):
            if not columns:
                raise ValueError(f"{name} must name at least one column")
            duplicated = sorted({c for c in columns if columns.count(c) > 1})
            if duplicated:
                raise ValueError(f"{name} repeat columns: {duplicated}")
        missing = [t for t in self.targets if t not in self.inputs]
        if missing:
            # Forecasting is autoregressive: each target's own past must be an input.
            raise ValueError(f"targets {missing} are not among the inputs")
        if self.time_column in self.inputs:
            raise ValueError(f"time column {self.time_column!r} cannot also be an input")
        return self

    def for_task(self, *, horizon: int | None = None, lags: int | None = None) -> FeatureSpec:
        """This spec with a dataset's own ``horizon`` and ``lags`` (``None`` keeps ours),
        validated like any spec: a value out of range is a ``ValidationError``."""
        changes = {k: v for k, v in (("horizon", horizon), ("lags", lags)) if v is not None}
        if not changes:
            return self
        return FeatureSpec.model_validate({**self.model_dump(), **changes})

    @property
    def step(self) -> pd.Timedelta:
        """One sampling step as a timedelta."""
        return pd.to_timedelta(self.frequency)

    @property
    def target_positions(self) -> list[int]:
        """Index of each target within ``inputs``."""
        return [self.inputs.index(t) for t in self.targets]

    @property
    def n_model_inputs(self) -> int:
        """Number of channels per time step a model sees: raw inputs plus time features."""
        return len(self.inputs) + len(self.time_features)


class Recipe(BaseModel):
    """How raw rows become training data. Every step of the published protocol is a field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = RECIPE_VERSION
    fill_na: float | None = Field(
        default=0.0, description="Value that replaces missing cells; None rejects them."
    )
    train_fraction: float = Field(
        default=0.8, gt=0.0, lt=1.0, description="Chronological split: ceil(f * n) rows train."
    )
    clip_columns: tuple[str, ...] = LTE_CLIPPED
    clip_percentiles: tuple[float, float] = (5.0, 95.0)
    scaler: Literal["minmax"] = "minmax"

    @field_validator("clip_percentiles")
    @classmethod
    def _percentiles_are_ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"clip_percentiles {value} must satisfy 0 <= low < high <= 100")
        return value
