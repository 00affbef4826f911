"""Metrics in original units: how every model is scored.

All candidates are scored by the same function on the same held-out windows
(docs/architecture.md, rule 3): predictions and actuals in original units, negative
predictions clipped to 0 (traffic cannot be negative). Metric names follow the published
protocol: MAE5 and RMSE5 are uniform averages over the targets, NRMSE is the mean of
RMSE_k / mean(y_k) over the traffic targets (down, up). Ranking and the promotion gate live in
:mod:`flts.promotion.gate`.

Beyond the published task, every figure is also reported per horizon step, with:

* MASE: the model's MAE over the MAE of persistence on the same windows and step (the caller
  passes the persistence forecast), so 1.0 is "no better than repeating the last value";
* wQL: the weighted quantile (pinball) loss ``2 * sum pinball_q / sum |y|``, averaged over the
  quantiles the intervals imply (level L gives ``(1 - L/100) / 2`` and its mirror) and the
  median, which is the point forecast;
* coverage (share of actuals inside) and mean width of each interval level.

Per target these are in original units; the summaries of a step average the scale-free
figures (MASE, wQL, coverage) uniformly over the targets, like MAE5, and the width relative to
each target's mean actual (so stations of any size compare). Steps 1, 5, 15 and 30 are the
summary steps (2 to 60 minutes at the published 2-minute grid), see :func:`summary_steps`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
from pydantic import BaseModel, Field

from flts.exceptions import ConfigurationError
from flts.models.intervals import level_key

#: Targets whose normalised RMSE makes up the headline NRMSE in the published protocol.
NRMSE_TARGETS: tuple[str, ...] = ("down", "up")
#: Horizon steps every report summarises when the horizon reaches them.
SUMMARY_STEPS: tuple[int, ...] = (1, 5, 15, 30)

#: ``level -> (lower, upper)``, each ``(n, horizon, targets)`` in original units.
Bands = Mapping[float, tuple[np.ndarray, np.ndarray]]


def summary_steps(horizon: int) -> tuple[int, ...]:
    """The summary steps (1-based) a forecast of ``horizon`` steps reaches."""
    return tuple(step for step in SUMMARY_STEPS if step <= horizon)


class TargetScores(BaseModel):
    """One target's figures, in its original units."""

    mae: float
    rmse: float
    nrmse: float
    #: MAE over persistence's MAE; ``None`` when no persistence forecast was given.
    mase: float | None = None
    #: Mean weighted quantile loss; ``None`` without intervals.
    wql: float | None = None
    #: Share of actuals inside the interval, keyed by level (``"80"``).
    coverage: dict[str, float] = Field(default_factory=dict)
    #: Mean width of the interval in original units, keyed by level.
    width: dict[str, float] = Field(default_factory=dict)


class StepScores(BaseModel):
    """Every figure at one horizon step: summaries over targets, then each target's own."""

    step: int
    nrmse: float
    mae5: float
    rmse5: float
    mase: float | None = None
    wql: float | None = None
    coverage: dict[str, float] = Field(default_factory=dict)
    #: Mean width relative to the target's mean actual, averaged over targets.
    width: dict[str, float] = Field(default_factory=dict)
    per_target: dict[str, TargetScores] = Field(default_factory=dict)


class Scores(BaseModel):
    """Every figure for one model on one evaluation set.

    The top-level figures pool every window and step (for the published one-step task, the
    step itself); ``per_step`` has one entry per horizon step."""

    nrmse: float
    mae5: float
    rmse5: float
    per_target: dict[str, TargetScores]
    per_step: list[StepScores] = Field(default_factory=list)
    n_windows: int
    mase: float | None = None
    wql: float | None = None
    coverage: dict[str, float] = Field(default_factory=dict)
    width: dict[str, float] = Field(default_factory=dict)

    @property
    def horizon_summary(self) -> dict[int, StepScores]:
        """The figures at each summary step the horizon reaches, keyed by step."""
        return {step: self.per_step[step - 1] for step in summary_steps(len(self.per_step))}


@dataclass(frozen=True)
class _Figures:
    """Per-target figures over some windows and steps (arrays of length ``targets``)."""

    mae: np.ndarray
    rmse: np.ndarray
    nrmse: np.ndarray
    mean: np.ndarray
    mase: np.ndarray | None
    wql: np.ndarray | None
    coverage: dict[str, np.ndarray]
    width: dict[str, np.ndarray]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` with ``inf`` where the denominator is 0: a target without a
    scale gets a visibly unusable figure, not a division error, and ranking still works."""
    out = np.full_like(numerator, np.inf, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0.0)
    return out


def _pinball(y: np.ndarray, forecast: np.ndarray, quantile: float) -> np.ndarray:
    """Pinball loss summed over rows, per target."""
    error = y - forecast
    loss: np.ndarray = np.maximum(quantile * error, (quantile - 1.0) * error).sum(axis=0)
    return loss


def _figures(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    baseline: np.ndarray | None,
    bands: Bands,
) -> _Figures:
    """Every per-target figure over all windows and steps of ``(n, steps, targets)`` arrays."""
    targets = y_true.shape[-1]
    flat_true = y_true.reshape(-1, targets)
    flat_pred = y_pred.reshape(-1, targets)
    error = flat_pred - flat_true
    mae = np.abs(error).mean(axis=0)
    rmse = np.sqrt((error**2).mean(axis=0))
    mean = flat_true.mean(axis=0)
    mase = None
    if baseline is not None:
        mase = _ratio(mae, np.abs(baseline.reshape(-1, targets) - flat_true).mean(axis=0))
    wql = None
    coverage: dict[str, np.ndarray] = {}
    width: dict[str, np.ndarray] = {}
    if bands:
        scale = np.abs(flat_true).sum(axis=0)
        losses = [2.0 * _pinball(flat_true, flat_pred, 0.5)]
        for level, (lower, upper) in bands.items():
            low, high = lower.reshape(-1, targets), upper.reshape(-1, targets)
            alpha = (1.0 - level / 100.0) / 2.0
            losses += [2.0 * _pinball(flat_true, low, alpha)]
            losses += [2.0 * _pinball(flat_true, high, 1.0 - alpha)]
            inside = (flat_true >= low) & (flat_true <= high)
            coverage[level_key(level)] = inside.mean(axis=0)
            width[level_key(level)] = (high - low).mean(axis=0)
        wql = np.mean([_ratio(loss, scale) for loss in losses], axis=0)
    return _Figures(mae, rmse, _ratio(rmse, mean), mean, mase, wql, coverage, width)


def _optional(values: np.ndarray | None) -> float | None:
    return None if values is None else float(values.mean())


def _target_scores(figures: _Figures, targets: tuple[str, ...]) -> dict[str, TargetScores]:
    def pick(values: np.ndarray | None, i: int) -> float | None:
        return None if values is None else float(values[i])

    return {
        target: TargetScores(
            mae=float(figures.mae[i]),
            rmse=float(figures.rmse[i]),
            nrmse=float(figures.nrmse[i]),
            mase=pick(figures.mase, i),
            wql=pick(figures.wql, i),
            coverage={k: float(v[i]) for k, v in figures.coverage.items()},
            width={k: float(v[i]) for k, v in figures.width.items()},
        )
        for i, target in enumerate(targets)
    }


class _Summary(TypedDict):
    nrmse: float
    mae5: float
    rmse5: float
    mase: float | None
    wql: float | None
    coverage: dict[str, float]
    width: dict[str, float]


def _summary(figures: _Figures, chosen: list[int]) -> _Summary:
    """Figures averaged over targets: NRMSE over ``chosen`` (the paper's), the rest over all."""
    return {
        "nrmse": float(figures.nrmse[chosen].mean()),
        "mae5": float(figures.mae.mean()),
        "rmse5": float(figures.rmse.mean()),
        "mase": _optional(figures.mase),
        "wql": _optional(figures.wql),
        "coverage": {k: float(v.mean()) for k, v in figures.coverage.items()},
        "width": {k: float(_ratio(v, figures.mean).mean()) for k, v in figures.width.items()},
    }


def _check_shape(name: str, array: np.ndarray, expected: tuple[int, ...]) -> None:
    if array.shape != expected:
        raise ConfigurationError(
            f"cannot score with {name} of shape {array.shape}; expected {expected}"
        )


def score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    targets: tuple[str, ...] | list[str],
    nrmse_targets: tuple[str, ...] = NRMSE_TARGETS,
    *,
    baseline: np.ndarray | None = None,
    bands: Bands | None = None,
) -> Scores:
    """Score ``(n, horizon, targets)`` predictions against actuals, both in original units.

    ``baseline`` is the persistence forecast of the same windows (for MASE) and ``bands`` the
    model's intervals around ``y_pred`` (for wQL, coverage and width); without them those
    figures are ``None`` / empty."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.clip(np.asarray(y_pred, dtype=np.float64), 0.0, None)
    if y_true.shape != y_pred.shape or y_true.ndim != 3 or y_true.shape[-1] != len(targets):
        raise ConfigurationError(
            f"cannot score predictions of shape {y_pred.shape} against actuals of shape "
            f"{y_true.shape} for {len(targets)} targets"
        )
    if y_true.shape[0] == 0:
        raise ConfigurationError("cannot score zero windows")
    if baseline is not None:
        baseline = np.clip(np.asarray(baseline, dtype=np.float64), 0.0, None)
        _check_shape("a baseline", baseline, y_true.shape)
    bands = dict(bands or {})
    for level, band in bands.items():
        for bound in band:
            _check_shape(f"the {level_key(level)}% interval", bound, y_true.shape)
    targets = tuple(targets)
    # Headline NRMSE over the traffic targets when present, otherwise over every target.
    chosen = [targets.index(t) for t in nrmse_targets if t in targets] or list(range(len(targets)))

    def sliced(step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, Bands]:
        cut = slice(step, step + 1)
        return (
            y_true[:, cut],
            y_pred[:, cut],
            None if baseline is None else baseline[:, cut],
            {level: (low[:, cut], high[:, cut]) for level, (low, high) in bands.items()},
        )

    per_step = []
    for step in range(y_true.shape[1]):
        figures = _figures(*sliced(step))
        per_step.append(
            StepScores(
                step=step + 1,
                per_target=_target_scores(figures, targets),
                **_summary(figures, chosen),
            )
        )
    pooled = _figures(y_true, y_pred, baseline, bands)
    return Scores(
        per_target=_target_scores(pooled, targets),
        per_step=per_step,
        n_windows=int(y_true.shape[0]),
        **_summary(pooled, chosen),
    )
