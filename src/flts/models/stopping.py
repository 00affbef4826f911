"""Early stopping on a validation score, shared by every torch training loop.

The recurrent forecasters (:class:`flts.models.neural.TorchForecaster`) and the network a
group of stations shares (:mod:`flts.models.global_mlp`) stop the same way, so both keep the
rule in one place:

* the score is the headline validation NRMSE the evaluator ranks by (lower is better), and
  the best epoch's weights are kept and restored at the end, so more epochs never make the
  model worse than the best one seen (or than the untrained network, epoch 0);
* training stops after ``patience`` epochs without a new best;
* after ``decay_patience`` epochs without one the learning rate is halved (the cheap part of a
  plateau schedule), and that count starts again; a new best resets both counts.
"""

from __future__ import annotations

import torch
from torch import nn


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that later optimiser steps do not change."""
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


class EarlyStopping:
    """Tracks the best validation score of ``module`` and decides when to stop.

    ``initial`` is the score before the first epoch (epoch 0): an epoch has to beat it to
    count as an improvement, and its weights are the ones restored when none does.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        initial: float,
        *,
        patience: int,
        decay_patience: int,
    ) -> None:
        self.module = module
        self.optimizer = optimizer
        self.patience = patience
        self.decay_patience = decay_patience
        self.best_score = initial
        self.best_epoch = 0
        self._best_state = _snapshot(module)
        self._since_best = 0
        self._since_decay = 0

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s validation score; ``True`` when training should stop now (the
        learning rate is then left as it is)."""
        if score < self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self._best_state = _snapshot(self.module)
            self._since_best = self._since_decay = 0
        else:
            self._since_best += 1
            self._since_decay += 1
        if self._since_best >= self.patience:
            return True
        if self._since_decay >= self.decay_patience:
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5
            self._since_decay = 0
        return False

    def restore(self) -> None:
        """Load the best epoch's weights (epoch 0's when no epoch beat them) into the module."""
        self.module.load_state_dict(self._best_state)
