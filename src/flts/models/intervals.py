"""Prediction intervals by split conformal calibration on validation residuals.

Every forecaster is calibrated once, when it is trained: its forecasts of the *validation*
windows (never the test split) give signed residuals ``actual - forecast`` in original units,
one sample per window for each horizon step and target. Their empirical quantiles on a fixed
probability grid are saved with the model as JSON (``intervals.json``), so a replica answers
an interval at any level in (0, 100) with two interpolations and no data.

Traffic is heteroscedastic (quiet nights, busy evenings), so residuals are *normalised* by a
per-window scale before their quantiles are taken: ``s = m + beta * median(m)``, where ``m``
is the mean absolute step-to-step change of the target over the window's own input rows. An
interval is then ``forecast + s * [q(a), q(1 - a)]`` with ``a = (1 - L/100) / 2`` for level
``L``, after the usual finite-sample correction (probabilities pushed out by ``(n + 1) / n``).
``beta`` (how much of a fixed width to mix in; ``inf`` is plain split conformal) is chosen on
validation alone: cut it into contiguous blocks, calibrate on all but one, and keep the
``beta`` whose 80% and 95% intervals miss nominal coverage least on the worst held-out block
and horizon step; then calibrate on all of it.

Signed quantiles keep the skew of traffic errors (bursts make upper errors longer than lower
ones). Quantiles are monotone in their probability, so intervals of different levels nest and
never cross; bounds are clipped at 0 (traffic is never negative) and the forecast (clipped at 0,
as it is served and scored) always lies inside its own interval.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from flts.exceptions import DataValidationError

INTERVALS_FILE = "intervals.json"
#: Probabilities at which residual quantiles are stored: 0, 0.25%, ..., 100% (401 points),
#: fine enough that interpolating between them moves a 95% bound by well under 1%.
GRID = np.linspace(0.0, 1.0, 401)
#: Most interval levels one request may ask for.
MAX_LEVELS = 8
#: Candidate mixing weights of a fixed width into the per-window scale (see module doc).
BETAS = (0.0, 0.1, 0.3, 1.0, 3.0, math.inf)
#: Contiguous validation blocks that choose ``beta``, and the levels they are scored at.
BLOCKS = 4
SELECTION_LEVELS = (80.0, 95.0)


class IntervalCalibration(BaseModel):
    """Normalised residual quantiles per horizon step and target, from the validation split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = "split-conformal, normalised"
    samples: int = Field(ge=1, description="Validation windows the residuals come from.")
    targets: tuple[str, ...]
    betas: list[float | None] = Field(
        description="Weight of the fixed width per horizon step; None = unnormalised."
    )
    reference_scale: list[float] = Field(description="Median window scale per target.")
    #: ``quantiles[step][target][k]`` = normalised residual quantile at ``GRID[k]``.
    quantiles: list[list[list[float]]]

    @classmethod
    def fit(
        cls,
        history: np.ndarray,
        actual: np.ndarray,
        forecast: np.ndarray,
        targets: Sequence[str],
    ) -> IntervalCalibration:
        """Calibrate from validation: ``history`` ``(n, lags, targets)`` are the targets'
        input rows of each window, ``actual`` and ``forecast`` ``(n, horizon, targets)``."""
        if actual.shape != forecast.shape or actual.ndim != 3 or len(actual) < 2:
            raise ValueError(f"cannot calibrate on shapes {actual.shape} and {forecast.shape}")
        movement = _movement(history)
        reference = np.maximum(np.median(movement, axis=0), 1e-12)
        # One beta for every step: the one whose worst block and step misses least. (Chosen
        # per step, the choice follows the noise of a few thousand windows.)
        errors = [_block_error(actual, forecast, movement, reference, b) for b in BETAS]
        best = BETAS[int(np.argmin([float(np.max(e)) for e in errors]))]
        betas = [best] * actual.shape[1]
        table = _fit_table(actual, forecast, movement, reference, betas)
        return cls(
            samples=len(actual),
            targets=tuple(targets),
            betas=[None if math.isinf(b) else b for b in betas],
            reference_scale=reference.tolist(),
            quantiles=np.round(table, 6).tolist(),
        )

    def bounds(
        self, history: np.ndarray, forecast: np.ndarray, level: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` of the ``level`` % interval around ``(n, horizon, targets)``
        forecasts, given each window's target input rows ``(n, lags, targets)``."""
        table = np.asarray(self.quantiles, dtype=np.float64)  # (horizon, targets, grid)
        if forecast.shape[1:] != table.shape[:2]:
            raise ValueError(f"forecast {forecast.shape} does not match {table.shape[:2]}")
        betas = [math.inf if b is None else b for b in self.betas]
        scale = _scale(_movement(history), np.asarray(self.reference_scale), betas)
        low, high = _offsets(table, level, self.samples)
        # Centred on the forecast as served and scored: negatives clipped to 0.
        centre = np.maximum(forecast, 0.0)
        lower = np.clip(centre + scale * low[None], 0.0, centre)
        upper = np.maximum(centre + scale * high[None], centre)
        return lower, upper

    def save(self, directory: Path) -> None:
        (directory / INTERVALS_FILE).write_text(self.model_dump_json())

    @classmethod
    def load(cls, directory: Path) -> IntervalCalibration | None:
        """The calibration saved in ``directory``, or ``None`` for a model saved without."""
        path = directory / INTERVALS_FILE
        if not path.is_file():
            return None
        return cls.model_validate(json.loads(path.read_text()))


def _movement(history: np.ndarray) -> np.ndarray:
    """Mean absolute step-to-step change per window and target, ``(n, targets)``."""
    if history.shape[1] < 2:
        return np.zeros((history.shape[0], history.shape[2]))
    movement: np.ndarray = np.abs(np.diff(history.astype(np.float64), axis=1)).mean(axis=1)
    return movement


def _scale(movement: np.ndarray, reference: np.ndarray, betas: Sequence[float]) -> np.ndarray:
    """Per-window scale ``(n, steps, targets)`` that residuals are divided by, one ``beta``
    per horizon step (``inf``: the fixed reference width alone)."""
    steps = []
    for beta in betas:
        if math.isinf(beta):
            scale = np.broadcast_to(reference, movement.shape)
        else:
            scale = movement + beta * reference
        steps.append(np.maximum(scale, 1e-9 * reference))
    return np.stack(steps, axis=1)


def _fit_table(
    actual: np.ndarray,
    forecast: np.ndarray,
    movement: np.ndarray,
    reference: np.ndarray,
    betas: Sequence[float],
) -> np.ndarray:
    """Quantiles ``(horizon, targets, grid)`` of the normalised residuals."""
    residuals = (actual - forecast) / _scale(movement, reference, betas)
    table: np.ndarray = np.quantile(residuals, GRID, axis=0).transpose(1, 2, 0)
    return table


def _offsets(table: np.ndarray, level: float, samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised lower and upper offsets ``(horizon, targets)`` of one level."""
    alpha = (1.0 - level / 100.0) / 2.0
    # Finite-sample correction of split conformal: widen the quantile by (n + 1) / n.
    stretch = (samples + 1) / samples
    low_p = float(np.clip(0.5 - (0.5 - alpha) * stretch, 0.0, 1.0))
    high_p = float(np.clip(0.5 + (0.5 - alpha) * stretch, 0.0, 1.0))
    return _interpolate(table, low_p), _interpolate(table, high_p)


def _block_error(
    actual: np.ndarray,
    forecast: np.ndarray,
    movement: np.ndarray,
    reference: np.ndarray,
    beta: float,
) -> np.ndarray:
    """Worst coverage gap per horizon step over :data:`BLOCKS` contiguous blocks of
    validation, each scored with a calibration on the others: a ``beta`` must hold up when
    the regime moves."""
    edges = np.linspace(0, len(actual), BLOCKS + 1).astype(int)
    betas = [beta] * actual.shape[1]
    worst = np.zeros(actual.shape[1])
    for start, stop in itertools.pairwise(edges):
        rest = np.r_[0:start, stop : len(actual)]
        table = _fit_table(actual[rest], forecast[rest], movement[rest], reference, betas)
        scale = _scale(movement[start:stop], reference, betas)
        for level in SELECTION_LEVELS:
            low, high = _offsets(table, level, len(rest))
            bounds = (
                forecast[start:stop] + scale * low[None],
                forecast[start:stop] + scale * high[None],
            )
            inside = (actual[start:stop] >= bounds[0]) & (actual[start:stop] <= bounds[1])
            worst = np.maximum(worst, np.abs(inside.mean(axis=(0, 2)) - level / 100.0))
    return worst


def _interpolate(table: np.ndarray, probability: float) -> np.ndarray:
    """Linear interpolation of ``(horizon, targets, grid)`` at one probability."""
    position = probability * (len(GRID) - 1)
    below = int(np.floor(position))
    above = min(below + 1, len(GRID) - 1)
    weight = position - below
    result: np.ndarray = table[..., below] * (1.0 - weight) + table[..., above] * weight
    return result


def check_levels(levels: Sequence[float], where: str = "intervals") -> tuple[float, ...]:
    """Interval levels as given, each in (0, 100), unique, at most :data:`MAX_LEVELS`;
    problems name ``where`` (the field they came from)."""
    problems = [
        f"{where}: interval level {level!r} must be a number between 0 and 100 (exclusive)"
        for level in levels
        if isinstance(level, bool)
        or not isinstance(level, int | float)
        or not 0.0 < float(level) < 100.0
    ]
    if len(levels) > MAX_LEVELS:
        problems.append(f"{where}: at most {MAX_LEVELS} interval levels, got {len(levels)}")
    if len(set(levels)) != len(levels):
        problems.append(f"{where}: interval levels must be unique")
    if problems:
        raise DataValidationError(*problems)
    return tuple(float(level) for level in levels)


def level_key(level: float) -> str:
    """How a level names its interval in answers: ``80``, ``97.5``."""
    return f"{level:g}"
