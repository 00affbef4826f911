"""Promotion pointer: atomic current, append-only history, stale-pointer fallback, rollback."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from flts.exceptions import ConfigurationError
from flts.promotion import Promotion, PromotionStore
from flts.storage import ObjectStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _promotion(run_id: str, minutes: int, config_hash: str = "c1") -> Promotion:
    return Promotion(
        run_id=run_id,
        model_type="RIDGE",
        config_hash=config_hash,
        identifier="PobleSec",
        scores={"nrmse": 0.8},
        promoted_at=T0 + timedelta(minutes=minutes),
    )


@pytest.fixture
def store() -> ObjectStore:
    return ObjectStore(f"memory://promotion-{uuid.uuid4().hex}")


def test_record_links_previous_and_appends_history(store: ObjectStore) -> None:
    promotions = PromotionStore(store)
    assert promotions.current("PobleSec") is None
    promotions.record(_promotion("a", 0))
    second = promotions.record(_promotion("b", 1, config_hash="c2"))
    assert second.previous_run_id == "a"
    current = promotions.current("PobleSec")
    assert current is not None
    assert current.run_id == "b"
    assert [p.run_id for p in promotions.history("PobleSec")] == ["a", "b"]
    per_config = promotions.current_for_config("PobleSec", "c1")
    assert per_config is not None
    assert per_config.run_id == "a"
    assert promotions.identifiers() == ["PobleSec"]


def test_stale_pointer_falls_back_to_last_valid_promotion(store: ObjectStore) -> None:
    existing = {"a", "b"}
    promotions = PromotionStore(store, run_exists=lambda run: run in existing)
    for i, run in enumerate(["a", "b", "c"]):
        promotions.record(_promotion(run, i))
    existing.discard("c")  # the champion's run was deleted from tracking
    current = promotions.current("PobleSec")
    assert current is not None
    assert current.run_id == "b"  # the last valid promoted run, not "the newest run"
    existing.clear()
    assert promotions.current("PobleSec") is None


def test_rollback_restores_the_previous_champion_and_is_recorded(store: ObjectStore) -> None:
    promotions = PromotionStore(store)
    promotions.record(_promotion("a", 0))
    promotions.record(_promotion("b", 1))
    rolled = promotions.rollback("PobleSec")
    assert rolled.run_id == "a"
    assert rolled.action == "rollback"
    assert rolled.previous_run_id == "b"
    assert [p.action for p in promotions.history("PobleSec")] == ["promote", "promote", "rollback"]


def test_rollback_without_history_is_a_clear_error(store: ObjectStore) -> None:
    promotions = PromotionStore(store)
    with pytest.raises(ConfigurationError, match="nothing to roll back"):
        promotions.rollback("PobleSec")
    promotions.record(_promotion("a", 0))
    with pytest.raises(ConfigurationError, match="no earlier valid champion"):
        promotions.rollback("PobleSec")


def test_etag_changes_with_the_pointer(store: ObjectStore) -> None:
    promotions = PromotionStore(store)
    assert promotions.etag("PobleSec") is None
    promotions.record(_promotion("a", 0))
    first = promotions.etag("PobleSec")
    promotions.record(_promotion("b", 1))
    assert promotions.etag("PobleSec") != first
