"""Metrics in original units: how every model is scored.

All candidates are scored by the same function on the same held-out windows
(docs/architecture.md, rule 3): predictions and actuals in original units, negative
predictions clipped to 0 (traffic cannot be negative). Metric names follow the published
protocol: MAE5 and RMSE5 are uniform averages over the targets, NRMSE is the mean of
RMSE_k / mean(y_k) over the traffic targets (down, up). Ranking and the promotion gate live in
:mod:`flts.promotion.gate`.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from flts.exceptions import ConfigurationError

#: Targets whose normalised RMSE makes up the headline NRMSE in the published protocol.
NRMSE_TARGETS: tuple[str, ...] = ("down", "up")


class TargetScores(BaseModel):
    mae: float
    rmse: float
    nrmse: float


class Scores(BaseModel):
    """Every figure for one model on one evaluation set."""

    nrmse: float
    mae5: float
    rmse5: float
    per_target: dict[str, TargetScores]
    #: One entry per forecast step (only when horizon > 1), same fields as the top level.
    per_step: list[dict[str, float]] = Field(default_factory=list)
    n_windows: int


def _per_target(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """MAE, RMSE and NRMSE per target over every window and step."""
    flat_true = y_true.reshape(-1, y_true.shape[-1])
    error = y_pred.reshape(flat_true.shape) - flat_true
    mae = np.abs(error).mean(axis=0)
    rmse = np.sqrt((error**2).mean(axis=0))
    mean = flat_true.mean(axis=0)
    # A target whose actuals average to 0 has no scale to normalise by: report inf, not a
    # division error, so ranking still works and the figure is visibly unusable.
    nrmse = np.full_like(rmse, np.inf)
    np.divide(rmse, mean, out=nrmse, where=mean != 0.0)
    return mae, rmse, nrmse


def score(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    targets: tuple[str, ...] | list[str],
    nrmse_targets: tuple[str, ...] = NRMSE_TARGETS,
) -> Scores:
    """Score ``(n, horizon, targets)`` predictions against actuals, both in original units."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.clip(np.asarray(y_pred, dtype=np.float64), 0.0, None)
    if y_true.shape != y_pred.shape or y_true.ndim != 3 or y_true.shape[-1] != len(targets):
        raise ConfigurationError(
            f"cannot score predictions of shape {y_pred.shape} against actuals of shape "
            f"{y_true.shape} for {len(targets)} targets"
        )
    if y_true.shape[0] == 0:
        raise ConfigurationError("cannot score zero windows")
    targets = tuple(targets)
    # Headline NRMSE over the traffic targets when present, otherwise over every target.
    chosen = [targets.index(t) for t in nrmse_targets if t in targets] or list(range(len(targets)))

    mae, rmse, nrmse = _per_target(y_true, y_pred)
    per_step = []
    if y_true.shape[1] > 1:
        for step in range(y_true.shape[1]):
            s_mae, s_rmse, s_nrmse = _per_target(y_true[:, step], y_pred[:, step])
            per_step.append(
                {
                    "step": step + 1,
                    "nrmse": float(s_nrmse[chosen].mean()),
                    "mae5": float(s_mae.mean()),
                    "rmse5": float(s_rmse.mean()),
                }
            )
    return Scores(
        nrmse=float(nrmse[chosen].mean()),
        mae5=float(mae.mean()),
        rmse5=float(rmse.mean()),
        per_target={
            t: TargetScores(mae=float(mae[i]), rmse=float(rmse[i]), nrmse=float(nrmse[i]))
            for i, t in enumerate(targets)
        },
        per_step=per_step,
        n_windows=int(y_true.shape[0]),
    )
