"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flts.evaluation import score
from flts.exceptions import ConfigurationError

TARGETS = ("rnti_count", "down", "up")


def test_hand_computed_metrics() -> None:
    y_true = np.array([[[10.0, 2.0, 4.0]], [[20.0, 4.0, 8.0]]])
    y_pred = np.array([[[12.0, 1.0, 4.0]], [[20.0, 7.0, -3.0]]])  # -3 is clipped to 0
    scores = score(y_true, y_pred, TARGETS)
    # per-target absolute errors: rnti [2, 0], down [1, 3], up [0, 8]
    assert scores.per_target["rnti_count"].mae == pytest.approx(1.0)
    assert scores.per_target["down"].rmse == pytest.approx(math.sqrt((1 + 9) / 2))
    assert scores.per_target["up"].rmse == pytest.approx(math.sqrt(64 / 2))
    assert scores.mae5 == pytest.approx((1.0 + 2.0 + 4.0) / 3)
    assert scores.rmse5 == pytest.approx((math.sqrt(2) + math.sqrt(5) + math.sqrt(32)) / 3)
    # NRMSE: mean over down and up of RMSE_k / mean(y_k); rnti_count is not part of it.
    expected = (math.sqrt(5) / 3.0 + math.sqrt(32) / 6.0) / 2
    assert scores.nrmse == pytest.approx(expected)
    assert scores.n_windows == 2
    assert scores.per_step == []


def test_per_step_scores_for_longer_horizons() -> None:
    y_true = np.ones((4, 3, 3))
    y_pred = y_true.copy()
    y_pred[:, 2] += 1.0  # only the third step is wrong
    scores = score(y_true, y_pred, TARGETS)
    assert [s["nrmse"] for s in scores.per_step] == pytest.approx([0.0, 0.0, 1.0])
    assert scores.nrmse == pytest.approx(math.sqrt(1 / 3))


def test_zero_mean_target_gives_inf_not_an_error() -> None:
    y = np.zeros((3, 1, 3))
    with np.errstate(all="raise"):
        scores = score(y, y + 1, TARGETS)
    assert math.isinf(scores.nrmse)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="cannot score"):
        score(np.ones((2, 1, 3)), np.ones((2, 1, 2)), TARGETS)
