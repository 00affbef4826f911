"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flts.evaluation import score, summary_steps
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
    [step] = scores.per_step  # one step: the same figures as the top level
    assert (step.step, step.nrmse, step.mae5) == (1, scores.nrmse, scores.mae5)
    assert (step.mase, step.wql, step.coverage) == (None, None, {})  # nothing to compare with


def test_per_step_scores_for_longer_horizons() -> None:
    y_true = np.ones((4, 3, 3))
    y_pred = y_true.copy()
    y_pred[:, 2] += 1.0  # only the third step is wrong
    scores = score(y_true, y_pred, TARGETS)
    assert [s.nrmse for s in scores.per_step] == pytest.approx([0.0, 0.0, 1.0])
    assert scores.nrmse == pytest.approx(math.sqrt(1 / 3))


def test_zero_mean_target_gives_inf_not_an_error() -> None:
    y = np.zeros((3, 1, 3))
    with np.errstate(all="raise"):
        scores = score(y, y + 1, TARGETS)
    assert math.isinf(scores.nrmse)


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="cannot score"):
        score(np.ones((2, 1, 3)), np.ones((2, 1, 2)), TARGETS)


def _tiny() -> tuple[
    np.ndarray, np.ndarray, np.ndarray, dict[float, tuple[np.ndarray, np.ndarray]]
]:
    """4 windows, 2 steps, 3 targets: actuals, a forecast, persistence, an 80 % band."""
    rng = np.random.default_rng(3)
    y_true = rng.uniform(1.0, 10.0, size=(4, 2, 3))
    y_pred = y_true + rng.normal(0.0, 1.0, size=y_true.shape)
    baseline = np.repeat(rng.uniform(1.0, 10.0, size=(4, 1, 3)), 2, axis=1)
    lower = y_pred - rng.uniform(0.5, 2.0, size=y_true.shape)
    upper = y_pred + rng.uniform(0.5, 2.0, size=y_true.shape)
    return y_true, np.clip(y_pred, 0.0, None), baseline, {80.0: (lower, upper)}


def test_per_step_figures_match_a_hand_computation() -> None:
    y_true, y_pred, baseline, bands = _tiny()
    scores = score(y_true, y_pred, TARGETS, baseline=baseline, bands=bands)
    lower, upper = bands[80.0]
    assert [s.step for s in scores.per_step] == [1, 2]
    for s, step in zip(scores.per_step, (0, 1), strict=True):
        for k, target in enumerate(TARGETS):
            y, f = y_true[:, step, k], y_pred[:, step, k]
            lo, hi = lower[:, step, k], upper[:, step, k]
            got = s.per_target[target]
            assert got.mae == pytest.approx(np.mean(np.abs(f - y)))
            assert got.rmse == pytest.approx(np.sqrt(np.mean((f - y) ** 2)))
            assert got.nrmse == pytest.approx(np.sqrt(np.mean((f - y) ** 2)) / np.mean(y))
            naive = np.mean(np.abs(baseline[:, step, k] - y))
            assert got.mase == pytest.approx(np.mean(np.abs(f - y)) / naive)
            # Quantiles 0.1 (lower), 0.9 (upper) and 0.5 (the forecast), each 2 * sum
            # pinball / sum |y|, then their mean.
            losses = []
            for q, pred in ((0.5, f), (0.1, lo), (0.9, hi)):
                pinball = [
                    max(q * (a - b), (q - 1) * (a - b)) for a, b in zip(y, pred, strict=True)
                ]
                losses.append(2 * sum(pinball) / np.sum(np.abs(y)))
            assert got.wql == pytest.approx(np.mean(losses))
            assert got.coverage["80"] == pytest.approx(np.mean((y >= lo) & (y <= hi)))
            assert got.width["80"] == pytest.approx(np.mean(hi - lo))
        # Step summaries: NRMSE over down/up, MAE5 and the scale-free figures over every target.
        assert s.nrmse == pytest.approx((s.per_target["down"].nrmse + s.per_target["up"].nrmse) / 2)
        assert s.mase == pytest.approx(np.mean([s.per_target[t].mase for t in TARGETS]))
        relative = [
            s.per_target[t].width["80"] / np.mean(y_true[:, step, k]) for k, t in enumerate(TARGETS)
        ]
        assert s.width["80"] == pytest.approx(np.mean(relative))
    pooled = np.mean(np.abs(y_pred - y_true)[..., 0]) / np.mean(np.abs(baseline - y_true)[..., 0])
    assert scores.per_target["rnti_count"].mase == pytest.approx(pooled)


def test_persistence_scored_against_itself_has_mase_one() -> None:
    y_true, _, baseline, _ = _tiny()
    scores = score(y_true, baseline, TARGETS, baseline=baseline)
    assert scores.mase == pytest.approx(1.0)
    assert [s.mase for s in scores.per_step] == pytest.approx([1.0, 1.0])


def test_coverage_and_width_of_known_bands() -> None:
    y_true = np.arange(1.0, 1.0 + 8 * 3).reshape(8, 1, 3)
    # Half the windows' bands hold the actual, half sit above it; every band is 2 wide.
    shift = np.where(np.arange(8) < 4, 0.0, 5.0)[:, None, None]
    bands = {95.0: (y_true - 1 + shift, y_true + 1 + shift)}
    scores = score(y_true, y_true, TARGETS, bands=bands)
    assert scores.coverage == {"95": pytest.approx(0.5)}
    assert {t: s.width["95"] for t, s in scores.per_target.items()} == pytest.approx(
        dict.fromkeys(TARGETS, 2.0)
    )
    assert scores.width["95"] == pytest.approx(np.mean(2.0 / y_true.mean(axis=(0, 1))))


def test_summary_steps_are_those_the_horizon_reaches() -> None:
    assert summary_steps(1) == (1,)
    assert summary_steps(20) == (1, 5, 15)
    assert summary_steps(60) == (1, 5, 15, 30)
    y = np.ones((2, 30, 3))
    y_pred = y + np.arange(30)[None, :, None]  # error grows with the step
    summary = score(y, y_pred, TARGETS).horizon_summary
    assert list(summary) == [1, 5, 15, 30]
    assert [s.mae5 for s in summary.values()] == pytest.approx([0.0, 4.0, 14.0, 29.0])


def test_baseline_and_bands_must_match_the_actuals() -> None:
    y = np.ones((2, 2, 3))
    with pytest.raises(ConfigurationError, match="baseline"):
        score(y, y, TARGETS, baseline=np.ones((2, 1, 3)))
    with pytest.raises(ConfigurationError, match="80% interval"):
        score(y, y, TARGETS, bands={80.0: (np.ones((2, 1, 3)), y)})
