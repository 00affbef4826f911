"""Promotion, in one place: who is the champion, why, and how the world learns of it.

* :mod:`~flts.promotion.gate`: ranking policy and the gate, whose verdict carries a
  :class:`ReasonCode`;
* :mod:`~flts.promotion.judge`: every candidate of a config hash scored on the test split, then
  the gate, giving a :class:`Decision`;
* :mod:`~flts.promotion.decisions`: decision records and pending markers (the evaluator's
  durable state);
* :mod:`~flts.promotion.pointer`: the champion pointer and its append-only history;
* :mod:`~flts.promotion.registry`: the MLflow registry alias ``champion``;
* :mod:`~flts.promotion.announce`: carrying a promotion out (history, alias, ``model-selected``);
* :mod:`~flts.promotion.manual`: operator promote and rollback, and the registry alias moved
  by hand.

The evaluator service (:mod:`flts.services.evaluate`) is the state machine around these.
:class:`~flts.promotion.judge.Judge` is imported from its module only: it brings in the data
and model stack, which the pointer's many readers (gateway, replicas, CLI) do not need.
"""

from flts.promotion.announce import announce, carry_out, selected_event_id
from flts.promotion.backends import Backends
from flts.promotion.decisions import (
    Decision,
    LeaderboardEntry,
    clear_pending,
    create_decision,
    decision_key,
    first_seen,
    list_decisions,
    mark_pending,
    pending,
    pending_key,
    read_decision,
    read_versioned_decision,
    replace_decision,
    write_decision,
)
from flts.promotion.gate import PromotionGate, ReasonCode, ScoringPolicy, Verdict
from flts.promotion.manual import follow_registry_alias, promote_run, rollback_champion
from flts.promotion.pointer import PROMOTION_ROOT, Promotion, PromotionStore, Recorded
from flts.promotion.registry import CHAMPION_ALIAS, champion_alias_run_id, move_champion_alias

__all__ = [
    "CHAMPION_ALIAS",
    "PROMOTION_ROOT",
    "Backends",
    "Decision",
    "LeaderboardEntry",
    "Promotion",
    "PromotionGate",
    "PromotionStore",
    "ReasonCode",
    "Recorded",
    "ScoringPolicy",
    "Verdict",
    "announce",
    "carry_out",
    "champion_alias_run_id",
    "clear_pending",
    "create_decision",
    "decision_key",
    "first_seen",
    "follow_registry_alias",
    "list_decisions",
    "mark_pending",
    "move_champion_alias",
    "pending",
    "pending_key",
    "promote_run",
    "read_decision",
    "read_versioned_decision",
    "replace_decision",
    "rollback_champion",
    "selected_event_id",
    "write_decision",
]
