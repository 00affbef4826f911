"""One writer per pointer and readers that survive damage: compare-and-swap on the champion
pointer, history entries created once, damaged entries skipped and reported."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flts.exceptions import ConflictError
from flts.promotion import Promotion, PromotionStore, Recorded
from flts.storage import ObjectStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def promotion(run_id: str, minutes: int = 0, **fields: Any) -> Promotion:
    return Promotion(
        run_id=run_id,
        model_type="RIDGE",
        config_hash="c" * 16,
        promoted_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


@pytest.fixture
def damaged() -> list[tuple[str, str, str]]:
    return []


@pytest.fixture
def promotions(damaged: list[tuple[str, str, str]]) -> PromotionStore:
    store = ObjectStore(f"memory://{uuid.uuid4().hex}")
    return PromotionStore(store, on_damaged=lambda *report: damaged.append(report))


def test_a_promotion_decided_against_an_older_champion_writes_nothing(
    promotions: PromotionStore,
) -> None:
    promotions.record(promotion("a"))
    promotions.record(promotion("b", 1))
    before = list(promotions.store.list("model-promotion"))
    with pytest.raises(ConflictError, match="champion is b, not a"):
        promotions.record(promotion("c", 2, previous_run_id="a"))
    assert list(promotions.store.list("model-promotion")) == before
    assert promotions.current() == promotions.history()[-1]


def test_pointer_changed_between_read_and_write_is_a_conflict(
    promotions: PromotionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    promotions.record(promotion("a"))
    store = promotions.store
    real = store.put_if_match

    def racing(key: str, data: bytes, tag: str | None) -> bool:
        if key.endswith("global/current.json"):  # another writer gets in first
            store.put_atomic(key, promotion("x", 5).model_dump_json().encode())
        return real(key, data, tag)

    monkeypatch.setattr(store, "put_if_match", racing)
    with pytest.raises(ConflictError, match="changed while writing"):
        promotions.record(promotion("b", 1))
    monkeypatch.undo()
    assert [p.run_id for p in promotions.history()] == ["a"]  # the loser's entry is gone
    assert promotions.current() == promotion("x", 5)


def test_repeating_a_promotion_records_it_once(promotions: PromotionStore) -> None:
    first = promotions.commit(promotion("a"))
    again = promotions.commit(promotion("a"))
    assert (first.created, again.created) == (True, False)
    assert again.promotion == first.promotion
    assert len(promotions.history()) == 1


def test_crash_between_history_entry_and_pointer_is_finished(promotions: PromotionStore) -> None:
    promotions.record(promotion("a"))
    late = promotion("b", 1, previous_run_id="a")
    promotions.store.put_if_absent(
        promotions.history_key(late), late.model_dump_json().encode()
    )  # the crashed writer got this far
    recorded = promotions.commit(promotion("b", 1, previous_run_id="a"))
    assert not recorded.created
    assert promotions.current() == late
    assert [p.run_id for p in promotions.history()] == ["a", "b"]


def test_damaged_history_entry_is_skipped_reported_and_rollback_works(
    promotions: PromotionStore, damaged: list[tuple[str, str, str]]
) -> None:
    for minutes, run_id in enumerate("abc"):
        promotions.record(promotion(run_id, minutes))
    keys = list(promotions.store.list("model-promotion/global/history"))
    promotions.store.put(keys[1], b'{"run_id": "b", "model_ty')  # truncated
    assert [p.run_id for p in promotions.history()] == ["a", "c"]
    assert damaged
    assert damaged[0][:2] == ("global", keys[1])
    rolled = promotions.rollback()
    assert (rolled.run_id, rolled.previous_run_id, rolled.action) == ("a", "c", "rollback")


def test_damaged_pointer_falls_back_to_the_history(promotions: PromotionStore) -> None:
    promotions.record(promotion("a"))
    promotions.record(promotion("b", 1))
    promotions.store.put(promotions.pointer_key("global"), b"\x00garbage")
    current = promotions.current()
    assert current is not None
    assert current.run_id == "b"
    replaced = promotions.record(promotion("c", 2))  # the damaged pointer is replaced
    assert replaced.previous_run_id == "b"
    assert promotions.current() == replaced


def test_loadable_history_is_newest_first_one_per_valid_run() -> None:
    deleted = {"b"}
    promotions = PromotionStore(
        ObjectStore(f"memory://{uuid.uuid4().hex}"), run_exists=lambda r: r not in deleted
    )
    for minutes, run_id in enumerate("abac"):
        promotions.record(promotion(run_id, minutes))
    assert [p.run_id for p in promotions.loadable_history()] == ["c", "a"]


def test_concurrent_writers_of_one_promotion_create_it_once(tmp_path: Path) -> None:
    """Writers in their own store objects on one directory commit the same promotion at once:
    every one returns it, exactly one created it, and the pointer names it."""
    url = (tmp_path / "store").as_uri()
    PromotionStore(ObjectStore(url)).record(promotion("a"))
    writers = 6
    start = threading.Barrier(writers)
    results: list[Recorded] = []

    def commit() -> None:
        stores = PromotionStore(ObjectStore(url))
        start.wait()
        results.append(stores.commit(promotion("b", 1, previous_run_id="a"), exact_previous=True))

    threads = [threading.Thread(target=commit) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == writers
    assert sum(r.created for r in results) == 1
    reader = PromotionStore(ObjectStore(url))
    assert all(r.promotion == reader.current() for r in results)
    assert [p.run_id for p in reader.history()] == ["a", "b"]
