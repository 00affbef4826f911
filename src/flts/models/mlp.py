"""Multi-layer perceptron on the flattened lag window, trained like the recurrent models.

The encoded window ``(n, lags, channels)`` is flattened to ``lags x channels`` features and
passed through ``num_layers`` ReLU layers of ``hidden_size`` units and a linear head to all
``horizon x targets`` scaled outputs. Everything else (early stopping on validation NRMSE,
censored loss, seeding, save/load, ONNX export) is :class:`~flts.models.neural.TorchForecaster`.

Why it is here: it sees every lag of every input at once, as ridge does, but non-linearly, and
its errors differ from the LSTM's, so it is a useful ENSEMBLE member.

The defaults (4 layers of 128 units, dropout 0.1) won a rolling-origin backtest inside the
Barcelona training files only (``flts benchmark backtest``, 3 folds, 3 seeds; docs/accuracy.md):
backtest NRMSE, mean of 3 stations, 4x128 dropout 0.1 0.616, 2x256 0.619, 2x64 0.626, 4x128
without dropout 0.627, 2x256 dropout 0.1 0.647 (ridge 0.619). The lead over 4x128 without
dropout comes from LesCorts (0.358 vs 0.436); on PobleSec and ElBorn dropout is slightly worse.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from flts.models.neural import TorchForecaster


def dense_body(
    width: int, hidden_size: int, num_layers: int, dropout: float
) -> tuple[nn.Sequential, int]:
    """``num_layers`` of Linear, ReLU and Dropout from ``width`` inputs, and the width they
    end with (the input width when there are none): the hidden part of the MLP and of the
    GLOBAL network."""
    layers: list[nn.Module] = []
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden_size
    return nn.Sequential(*layers), width


class MLPNet(nn.Module):
    """Flatten -> ``layers`` x (Linear, ReLU, Dropout) -> Linear -> ``(n, horizon, targets)``."""

    def __init__(
        self,
        *,
        channels: int,
        lags: int,
        horizon: int,
        targets: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.body, width = dense_body(channels * lags, hidden_size, num_layers, dropout)
        self.head = nn.Linear(width, horizon * targets)
        self.horizon = horizon
        self.targets = targets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x.flatten(1)))
        return out.reshape(-1, self.horizon, self.targets)


class MLPForecaster(TorchForecaster):
    """Feed-forward network over the flattened lag window (``num_layers`` hidden layers)."""

    model_type = "MLP"
    default_params: ClassVar[dict[str, Any]] = {
        **TorchForecaster.default_params,
        "hidden_size": 128,
        "num_layers": 4,
        "dropout": 0.1,
    }

    def _build_module(self) -> nn.Module:
        p = self.params
        return MLPNet(
            channels=self.spec.n_model_inputs,
            lags=self.spec.lags,
            horizon=self.spec.horizon,
            targets=len(self.spec.targets),
            hidden_size=int(p["hidden_size"]),
            num_layers=int(p["num_layers"]),
            dropout=float(p["dropout"]),
        )
