"""Early stopping shared by the torch training loops (flts.models.stopping): the best
epoch's weights are restored, training stops after ``patience`` epochs without a new best,
and the learning rate halves after ``decay_patience`` of them."""

from __future__ import annotations

import torch
from torch import nn

from flts.models.stopping import EarlyStopping


def _setup(
    initial: float, *, patience: int, decay_patience: int
) -> tuple[nn.Linear, torch.optim.Optimizer, EarlyStopping]:
    module = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    stopping = EarlyStopping(
        module, optimizer, initial, patience=patience, decay_patience=decay_patience
    )
    return module, optimizer, stopping


def _set_weights(module: nn.Linear, value: float) -> None:
    with torch.no_grad():
        module.weight.fill_(value)
        module.bias.fill_(value)


def test_stops_after_patience_and_restores_the_best_epoch() -> None:
    module, optimizer, stopping = _setup(1.0, patience=3, decay_patience=2)
    scores = [0.9, 0.5, 0.6, 0.7, 0.55, 0.8]  # best at epoch 2, then three without a new best
    stopped_at = None
    for epoch, score in enumerate(scores, start=1):
        _set_weights(module, float(epoch))  # what that epoch's training left
        if stopping.update(epoch, score):
            stopped_at = epoch
            break
    assert stopped_at == 5
    assert (stopping.best_epoch, stopping.best_score) == (2, 0.5)
    # one halving after two epochs without a new best; none on the epoch that stops
    assert optimizer.param_groups[0]["lr"] == 0.5
    stopping.restore()
    assert torch.equal(module.weight, torch.full_like(module.weight, 2.0))
    assert torch.equal(module.bias, torch.full_like(module.bias, 2.0))


def test_a_new_best_resets_both_counts() -> None:
    _, optimizer, stopping = _setup(1.0, patience=3, decay_patience=2)
    # two stalls (a halving), a new best, two stalls (another), a new best: never stopped
    for epoch, score in enumerate([1.0, 1.0, 0.9, 0.95, 0.95, 0.8], start=1):
        assert not stopping.update(epoch, score)
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert stopping.best_epoch == 6


def test_no_epoch_better_than_the_untrained_network_restores_it() -> None:
    module = nn.Linear(2, 1)
    _set_weights(module, -3.0)  # epoch 0: these weights, score 0.1
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0)
    stopping = EarlyStopping(module, optimizer, 0.1, patience=2, decay_patience=5)
    _set_weights(module, 7.0)
    assert not stopping.update(1, 0.2)
    assert stopping.update(2, 0.1)  # equal is not better
    assert stopping.best_epoch == 0
    stopping.restore()
    assert torch.equal(module.weight, torch.full_like(module.weight, -3.0))
