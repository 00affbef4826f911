"""The scoring policy and the promotion gate: verdicts with stable reason codes."""

from __future__ import annotations

import numpy as np
import pytest

from flts.evaluation import Scores, score
from flts.promotion import PromotionGate, ReasonCode, ScoringPolicy


def _scores(nrmse: float) -> Scores:
    return Scores(nrmse=nrmse, mae5=1.0, rmse5=1.0, per_target={}, n_windows=1)


def test_policy_ranks_lower_first_and_non_finite_last() -> None:
    policy = ScoringPolicy()
    ranked = policy.rank({"a": _scores(0.9), "b": _scores(float("nan")), "c": _scores(0.8)})
    assert ranked == ["c", "a", "b"]


def test_gate_requires_beating_persistence_by_the_margin() -> None:
    gate = PromotionGate(baseline_margin=0.05)
    assert not gate.decide(_scores(0.96), _scores(1.0)).promote
    decision = gate.decide(_scores(0.94), _scores(1.0))
    assert decision.promote
    assert "beats persistence" in decision.reason


def test_gate_requires_beating_the_champion() -> None:
    gate = PromotionGate(champion_margin=0.01)
    refused = gate.decide(_scores(0.800), _scores(1.0), champion=_scores(0.805))
    assert not refused.promote
    assert "does not beat champion 0.8050" in refused.reason
    assert gate.decide(_scores(0.79), _scores(1.0), champion=_scores(0.805)).promote


def test_gate_never_promotes_a_non_finite_score() -> None:
    assert not PromotionGate().decide(_scores(float("nan")), _scores(1.0)).promote


@pytest.mark.parametrize(
    ("candidate", "champion", "code"),
    [
        (0.9, None, ReasonCode.BEATS_BASELINE),
        (0.8, 0.85, ReasonCode.BEATS_CHAMPION),
        (1.1, None, ReasonCode.BASELINE_NOT_BEATEN),
        (1.1, 0.85, ReasonCode.BASELINE_NOT_BEATEN),  # persistence is checked first
        (float("nan"), None, ReasonCode.BASELINE_NOT_BEATEN),
        (0.9, 0.85, ReasonCode.CHAMPION_NOT_BEATEN),
    ],
)
def test_every_verdict_carries_its_reason_code(
    candidate: float, champion: float | None, code: ReasonCode
) -> None:
    verdict = PromotionGate().decide(
        _scores(candidate), _scores(1.0), None if champion is None else _scores(champion)
    )
    assert verdict.reason_code is code
    assert verdict.promote is code.promotes


def test_no_candidate_is_a_verdict_too() -> None:
    verdict = PromotionGate().decide(None, _scores(1.0))
    assert verdict.reason_code is ReasonCode.NO_CANDIDATE
    assert not verdict.promote


def test_rejection_codes_are_a_small_fixed_set() -> None:
    """They are the ``reason`` label of ``flts_promotion_rejections_total``: bounded, stable."""
    rejections = [code.value for code in ReasonCode if not code.promotes]
    assert rejections == ["baseline", "baseline_at_step", "champion", "no_candidate"]


def _horizon_scores(errors: dict[int, float], default: float) -> Scores:
    """Scores of a 30-step forecast off by ``default`` at every step except ``errors``
    (step -> error), on flat actuals of 10."""
    targets = ("rnti_count", "down", "up")
    y = np.full((4, 30, 3), 10.0)
    offset = np.full(30, default)
    for step, error in errors.items():
        offset[step - 1] = error
    return score(y, y + offset[None, :, None], targets)


def test_gate_refuses_a_candidate_worse_than_persistence_at_a_summary_step() -> None:
    persistence = _horizon_scores({}, 1.0)
    candidate = _horizon_scores({15: 2.0}, 0.1)  # far better on average, worse at step 15
    assert candidate.nrmse < persistence.nrmse
    verdict = PromotionGate().decide(candidate, persistence)
    assert verdict.reason_code is ReasonCode.BASELINE_AT_STEP
    assert not verdict.promote
    assert "nrmse 0.2000 at step 15 is worse than persistence 0.1000" in verdict.reason


def test_steps_between_the_summary_steps_do_not_gate() -> None:
    persistence = _horizon_scores({}, 1.0)
    candidate = _horizon_scores({7: 2.0}, 0.1)  # step 7 is not reported
    assert PromotionGate().decide(candidate, persistence).reason_code is ReasonCode.BEATS_BASELINE


def test_winning_every_step_still_has_to_beat_the_champion() -> None:
    persistence = _horizon_scores({}, 1.0)
    champion = _horizon_scores({}, 0.2)
    candidate = _horizon_scores({}, 0.3)
    verdict = PromotionGate().decide(candidate, persistence, champion)
    assert verdict.reason_code is ReasonCode.CHAMPION_NOT_BEATEN
    better = _horizon_scores({}, 0.1)
    assert PromotionGate().decide(better, persistence, champion).promote
