"""The promotion gate: may the best candidate become the champion, and why.

Every figure the gate compares was computed by the evaluator on the same held-out windows
(docs/architecture.md, rule 3). Its :class:`Verdict` carries a :class:`ReasonCode` for
machines (decision records, the ``reason`` label of ``flts_promotion_rejections_total``) beside
a message for people; nothing ever parses the message.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from flts.evaluation import Scores, StepScores


class ReasonCode(StrEnum):
    """Why a decision promoted its best candidate or nothing (values are stable)."""

    #: Promoted: beats persistence and there is no champion yet.
    BEATS_BASELINE = "beats_baseline"
    #: Promoted: beats persistence and the current champion.
    BEATS_CHAMPION = "beats_champion"
    #: Rejected: the best candidate does not beat persistence by the baseline margin.
    BASELINE_NOT_BEATEN = "baseline"
    #: Rejected: the candidate is worse than persistence at one of the summary horizon steps.
    BASELINE_AT_STEP = "baseline_at_step"
    #: Rejected: the best candidate does not beat the champion by the champion margin.
    CHAMPION_NOT_BEATEN = "champion"
    #: Rejected: no candidate could be scored (all failed, unscorable or missing).
    NO_CANDIDATE = "no_candidate"

    @property
    def promotes(self) -> bool:
        return self in (ReasonCode.BEATS_BASELINE, ReasonCode.BEATS_CHAMPION)


class Verdict(BaseModel):
    """The gate's answer: a code and the human-readable reason beside it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason_code: ReasonCode
    reason: str

    @property
    def promote(self) -> bool:
        return self.reason_code.promotes


class ScoringPolicy(BaseModel):
    """Which figure ranks candidates; every choice is an error figure, so lower is better."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["nrmse", "mae5", "rmse5"] = "nrmse"

    def value(self, scores: Scores | StepScores) -> float:
        return float(getattr(scores, self.metric))

    def improves_by(self, candidate: float, reference: float, margin: float) -> bool:
        """True when ``candidate`` beats ``reference`` by at least a relative ``margin``."""
        if not math.isfinite(candidate):
            return False
        return candidate <= reference * (1.0 - margin) and candidate < reference

    def rank(self, scores: dict[str, Scores]) -> list[str]:
        """Candidate names, best first (non-finite scores last)."""

        def key(name: str) -> tuple[bool, float]:
            v = self.value(scores[name])
            return (not math.isfinite(v), v if math.isfinite(v) else 0.0)

        return sorted(scores, key=key)


class PromotionGate(BaseModel):
    """A candidate qualifies only if it beats the persistence baseline by ``baseline_margin``,
    is no worse than persistence at any summary horizon step (1, 5, 15, 30 within the
    horizon: a model that wins on average but loses at 30 minutes is no use to an operator
    acting 30 minutes ahead), and, when a champion exists, beats the champion by
    ``champion_margin`` (both margins relative, on the policy's metric over every step)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: ScoringPolicy = ScoringPolicy()
    baseline_margin: float = Field(default=0.0, ge=0.0, lt=1.0)
    champion_margin: float = Field(default=0.0, ge=0.0, lt=1.0)

    def decide(
        self, candidate: Scores | None, baseline: Scores, champion: Scores | None = None
    ) -> Verdict:
        """Judge the best candidate (``None`` when no candidate could be scored)."""
        if candidate is None:
            return Verdict(reason_code=ReasonCode.NO_CANDIDATE, reason="no candidate")
        metric = self.policy.metric
        c, b = self.policy.value(candidate), self.policy.value(baseline)
        if not self.policy.improves_by(c, b, self.baseline_margin):
            return Verdict(
                reason_code=ReasonCode.BASELINE_NOT_BEATEN,
                reason=f"{metric} {c:.4f} does not beat persistence {b:.4f} "
                f"by {self.baseline_margin:.1%}",
            )
        worse = self._worse_step(candidate, baseline)
        if worse is not None:
            step, c_step, b_step = worse
            return Verdict(
                reason_code=ReasonCode.BASELINE_AT_STEP,
                reason=f"{metric} {c_step:.4f} at step {step} is worse than persistence "
                f"{b_step:.4f} there",
            )
        if champion is None:
            return Verdict(
                reason_code=ReasonCode.BEATS_BASELINE,
                reason=f"{metric} {c:.4f} beats persistence {b:.4f}",
            )
        ch = self.policy.value(champion)
        if not self.policy.improves_by(c, ch, self.champion_margin):
            return Verdict(
                reason_code=ReasonCode.CHAMPION_NOT_BEATEN,
                reason=f"{metric} {c:.4f} does not beat champion {ch:.4f} "
                f"by {self.champion_margin:.1%}",
            )
        return Verdict(
            reason_code=ReasonCode.BEATS_CHAMPION,
            reason=f"{metric} {c:.4f} beats champion {ch:.4f}",
        )

    def _worse_step(self, candidate: Scores, baseline: Scores) -> tuple[int, float, float] | None:
        """The first summary step where the candidate is worse than persistence (or not
        finite): ``(step, candidate, persistence)``, else ``None``."""
        reference = baseline.horizon_summary
        for step, figures in candidate.horizon_summary.items():
            if step not in reference:
                continue
            c, b = self.policy.value(figures), self.policy.value(reference[step])
            if not math.isfinite(c) or c > b:
                return step, c, b
        return None
