"""Decision records and their durable store: the evaluator's whole memory.

Layout in the object store (docs/architecture.md, rule 5: a restarted evaluator needs nothing
else)::

    evaluations-pending/<identifier>/<config_hash>.json   reported, not decided yet
    evaluations/<identifier>/<config_hash>.json           the decision and its leaderboard

A decision is written in state ``promoting`` *before* any side effect and ``done`` after them,
so a crash in between resumes the same promotion instead of deciding again.

One writer per decision (docs/architecture.md, rule 13): a decision is *created* with
:meth:`~flts.storage.ObjectStore.put_if_absent`, so of two evaluators judging the same config
hash at once exactly one records its judgment and the other adopts it; a decision is only
ever replaced by compare-and-swap on the version read (:func:`replace_decision`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flts.promotion.gate import ReasonCode
from flts.promotion.pointer import Promotion
from flts.storage import ObjectStore

DECISIONS_ROOT = "evaluations"
PENDING_ROOT = "evaluations-pending"
#: Figures copied into the pointer, the event and the leaderboard.
HEADLINE = ("nrmse", "mae5", "rmse5")


class HorizonFigures(BaseModel):
    """A model's figures at one horizon step, averaged over targets as
    :class:`flts.evaluation.StepScores` defines them (``None``: not finite, or not computed:
    MASE without persistence, wQL/coverage/width without an interval calibration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nrmse: float | None = None
    mae5: float | None = None
    rmse5: float | None = None
    mase: float | None = None
    wql: float | None = None
    #: Share of actuals inside each interval level (``"80"``).
    coverage: dict[str, float] = Field(default_factory=dict)
    #: Mean width of each level relative to the mean actual.
    width: dict[str, float] = Field(default_factory=dict)


class LeaderboardEntry(HorizonFigures):
    """One model type's line in a decision (scores are the evaluator's, on the test split).

    The headline and interval figures (inherited) pool every horizon step; ``horizon`` has the
    figures at each summary step (1, 5, 15, 30 within the horizon). Fields added after the
    first records default to empty, so those records still parse."""

    model_type: str
    run_id: str | None = None
    status: Literal["SUCCESS", "FAILED", "MISSING", "UNSCORED"]
    horizon: dict[int, HorizonFigures] = Field(default_factory=dict)
    train_seconds: float | None = None
    promoted: bool = False
    reason: str = ""

    def figures(self) -> dict[str, float]:
        """The headline figures this line has (a figure that was not finite is ``None``)."""
        values = {name: getattr(self, name) for name in HEADLINE}
        return {name: float(value) for name, value in values.items() if value is not None}


class Decision(BaseModel):
    """What the evaluator decided for one config hash (``evaluations/<id>/<hash>.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identifier: str
    config_hash: str
    state: Literal["promoting", "done"]
    decided_at: AwareDatetime
    #: The gate's verdict on the best candidate; ``None`` only in decisions recorded before
    #: reason codes existed, which stay readable.
    reason_code: ReasonCode | None = None
    correlation_id: str | None = None
    deadline_passed: bool = False
    expected_models: list[str] = Field(default_factory=list)
    missing_models: list[str] = Field(default_factory=list)
    test_windows: int = 0
    baseline: dict[str, float | None] = Field(default_factory=dict)
    #: Persistence's figures at each summary step (what the gate compared per step).
    baseline_horizon: dict[int, HorizonFigures] = Field(default_factory=dict)
    #: Interval levels every calibrated candidate was scored at.
    interval_levels: list[float] = Field(default_factory=list)
    previous_champion: dict[str, Any] | None = None
    """The champion before this decision: run_id, model_type, nrmse, rescored (bool)."""
    leaderboard: list[LeaderboardEntry] = Field(default_factory=list)
    """Best first: scored candidates by the policy metric, then unscored, failed, missing."""
    champion: dict[str, Any] | None = None
    """The model this decision promoted (run_id, model_type, nrmse), or ``None``."""
    promotion: Promotion | None = None


def decision_key(identifier: str, config_hash: str) -> str:
    return f"{DECISIONS_ROOT}/{identifier}/{config_hash}.json"


def pending_key(identifier: str, config_hash: str) -> str:
    return f"{PENDING_ROOT}/{identifier}/{config_hash}.json"


def read_decision(store: ObjectStore, identifier: str, config_hash: str) -> dict[str, Any] | None:
    """The decision document for a config hash (plain JSON, as the CLI prints it), or ``None``
    while the evaluator is still waiting."""
    try:
        document: dict[str, Any] = store.get_json(decision_key(identifier, config_hash))
    except KeyError:
        return None
    return document


def _encoded(decision: Decision) -> bytes:
    return json.dumps(decision.model_dump(mode="json"), indent=2, sort_keys=True).encode()


def read_versioned_decision(
    store: ObjectStore, identifier: str, config_hash: str
) -> tuple[Decision, str] | None:
    """The stored decision and its version tag (for :func:`replace_decision`), or ``None``."""
    try:
        version = store.get_versioned(decision_key(identifier, config_hash))
    except KeyError:
        return None
    return Decision.model_validate_json(version.data), version.tag


def create_decision(store: ObjectStore, decision: Decision) -> bool:
    """Record ``decision`` unless one exists for its config hash; ``True`` when this call
    created it (the caller then owns carrying it out)."""
    return store.put_if_absent(
        decision_key(decision.identifier, decision.config_hash), _encoded(decision)
    )


def replace_decision(store: ObjectStore, decision: Decision, tag: str) -> bool:
    """Replace the stored decision if it is still the version ``tag``; ``False`` if another
    writer replaced it first."""
    key = decision_key(decision.identifier, decision.config_hash)
    return store.put_if_match(key, _encoded(decision), tag)


def write_decision(store: ObjectStore, decision: Decision) -> None:
    """Overwrite the decision whole (the owner's own state change, ``promoting`` -> ``done``,
    which every writer of that promotion makes identically)."""
    store.put_atomic(decision_key(decision.identifier, decision.config_hash), _encoded(decision))


def list_decisions(store: ObjectStore, identifier: str | None = None) -> list[dict[str, Any]]:
    """Decision documents for one identifier (or all), oldest decision first."""
    prefix = DECISIONS_ROOT if identifier is None else f"{DECISIONS_ROOT}/{identifier}"
    documents: list[dict[str, Any]] = []
    for key in store.list(prefix):
        if key.endswith(".json"):
            try:
                documents.append(store.get_json(key))
            except KeyError:  # removed while listing
                continue
    return sorted(documents, key=lambda d: str(d.get("decided_at", "")))


def mark_pending(store: ObjectStore, identifier: str, config_hash: str, now: datetime) -> None:
    """Remember that ``config_hash`` has reported, unless it is marked or decided already."""
    key = pending_key(identifier, config_hash)
    if not store.exists(key) and not store.exists(decision_key(identifier, config_hash)):
        store.put_json(
            key,
            {"identifier": identifier, "config_hash": config_hash, "first_seen": now.isoformat()},
        )


def pending(store: ObjectStore) -> list[tuple[str, str]]:
    """Every ``(identifier, config_hash)`` still marked pending."""
    marked: list[tuple[str, str]] = []
    for key in store.list(PENDING_ROOT):
        parts = key.removesuffix(".json").split("/")
        if len(parts) == 3:
            marked.append((parts[1], parts[2]))
    return marked


def first_seen(store: ObjectStore, identifier: str, config_hash: str) -> datetime | None:
    """When the pending marker was written (``None`` without a readable marker)."""
    try:
        marker = store.get_json(pending_key(identifier, config_hash))
        return datetime.fromisoformat(marker["first_seen"])
    except (KeyError, ValueError):
        return None


def clear_pending(store: ObjectStore, identifier: str, config_hash: str) -> None:
    store.delete(pending_key(identifier, config_hash))
