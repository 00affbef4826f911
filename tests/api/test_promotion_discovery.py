"""How a replica learns of promotions at fleet scale (docs/architecture.md, rule 7): one
conditional read of the promotion index per poll when nothing changed, whatever the number
of identifiers; exactly the changed pointers read when something did; a full listing when
the index is missing or damaged, at start, and every ``full_listing_seconds`` (which repairs
a lost index update). Store requests are counted on a memory store."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from flts.api import ModelHolder, PromotionModelSource
from flts.api.watcher import ChampionWatcher
from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import INDEX_KEY, part_key, part_of
from flts.storage import ObjectStore
from helpers import CountingStore

from .support import CONFIG_HASH, T0, Runs


def _replica(
    runs: Runs, identifiers: int, full_listing_seconds: float = 0.0
) -> tuple[PromotionStore, CountingStore, ChampionWatcher]:
    """A store with ``identifiers`` champions, and a watcher after its start-up poll."""
    shared = ObjectStore(f"memory://{uuid.uuid4().hex}")
    writer = PromotionStore(shared)
    for number in range(identifiers):
        _promote(writer, f"cell-{number}", "run-ridge", 0)
    counting = CountingStore(shared)
    holder = ModelHolder(PromotionModelSource(PromotionStore(counting, runs.exists), runs.load))
    watcher = ChampionWatcher(holder, poll_seconds=60, full_listing_seconds=full_listing_seconds)
    watcher.poll_once()
    assert len(holder.snapshot()) == identifiers
    assert watcher.full_listings == 1
    counting.reads()
    return writer, counting, watcher


def _promote(writer: PromotionStore, identifier: str, run_id: str, minutes: int) -> None:
    writer.record(
        Promotion(
            run_id=run_id,
            model_type="RIDGE" if "ridge" in run_id else "PERSISTENCE",
            config_hash=CONFIG_HASH,
            identifier=identifier,
            promoted_at=T0 + timedelta(minutes=minutes),
        )
    )


@pytest.mark.parametrize("identifiers", [3, 30])
def test_an_unchanged_fleet_costs_one_index_read_per_poll(runs: Runs, identifiers: int) -> None:
    _, counting, watcher = _replica(runs, identifiers)
    for _ in range(5):
        watcher.poll_once()
    assert counting.reads() == [("get_if_changed", INDEX_KEY)] * 5
    assert watcher.full_listings == 1


def test_only_the_changed_pointers_are_read(runs: Runs) -> None:
    writer, counting, watcher = _replica(runs, 20)
    _promote(writer, "cell-4", "run-persistence", 1)
    _promote(writer, "cell-11", "run-persistence", 1)
    counting.reads()
    watcher.poll_once()
    calls = counting.reads()
    assert calls[0] == ("get_if_changed", INDEX_KEY)
    parts = {("get", part_key(part_of(name))) for name in ("cell-4", "cell-11")}
    assert set(calls[1 : 1 + len(parts)]) == parts  # the parts that changed, then pointers
    assert sorted(set(calls[1 + len(parts) :])) == [
        ("get", PromotionStore.pointer_key("cell-11")),
        ("get", PromotionStore.pointer_key("cell-4")),
    ]
    snapshot = watcher.holder.snapshot()
    assert {k for k, v in snapshot.items() if v.promotion.run_id == "run-persistence"} == {
        "cell-4",
        "cell-11",
    }
    watcher.poll_once()  # and then it is quiet again
    assert counting.reads() == [("get_if_changed", INDEX_KEY)]


@pytest.mark.parametrize("damage", [None, b"not an index"])
def test_a_missing_or_damaged_index_falls_back_to_listing(runs: Runs, damage: bytes | None) -> None:
    writer, counting, watcher = _replica(runs, 5)
    # A promotion whose index update is lost with the index itself.
    _promote(writer, "cell-2", "run-persistence", 1)
    if damage is None:
        counting.inner.delete(INDEX_KEY)
    else:
        counting.inner.put_atomic(INDEX_KEY, damage)
    counting.reads()
    watcher.poll_once()
    calls = counting.reads()
    assert ("list", "model-promotion") in calls
    assert watcher.full_listings == 2
    assert watcher.holder.snapshot()["cell-2"].promotion.run_id == "run-persistence"


def test_a_lost_index_update_is_repaired_by_the_periodic_listing(runs: Runs) -> None:
    writer, counting, watcher = _replica(runs, 5, full_listing_seconds=0.2)
    before = counting.inner.get(INDEX_KEY)
    _promote(writer, "cell-3", "run-persistence", 1)
    counting.inner.put_atomic(INDEX_KEY, before)  # the writer died before the index update
    watcher.poll_once()
    assert watcher.holder.snapshot()["cell-3"].promotion.run_id == "run-ridge"  # only a hint
    time.sleep(0.25)
    watcher.poll_once()
    assert watcher.full_listings == 2
    assert watcher.holder.snapshot()["cell-3"].promotion.run_id == "run-persistence"


def _listings(calls: list[tuple[str, str]]) -> int:
    return sum(1 for method, _ in calls if method == "list")


@pytest.mark.parametrize("started", ["before", "after"])
def test_a_lost_part_costs_one_listing_per_version_not_per_poll(runs: Runs, started: str) -> None:
    """A part the store lost (the top still names it) costs a replica one listing per hash
    the top names of it, not one per poll, and no promotion in it goes unseen: the copy a
    replica held before is stale, so the part's pointers are read."""
    names = [f"cell-{number}" for number in range(6)]
    lost, other = part_of(names[0]), part_of(names[1])
    assert lost != other
    writer, counting, watcher = _replica(runs, len(names))
    _promote(writer, names[0], "run-persistence", 1)  # a version of the part no reader has...
    counting.inner.delete(part_key(lost))  # ... lost (the top still names it)
    if started == "after":
        holder = ModelHolder(PromotionModelSource(PromotionStore(counting, runs.exists), runs.load))
        watcher = ChampionWatcher(holder, poll_seconds=60, full_listing_seconds=0.0)
        watcher.poll_once()  # the start-up listing
    _promote(writer, names[1], "run-persistence", 1)
    counting.reads()
    for _ in range(3):
        watcher.poll_once()
    calls = counting.reads()
    # The replica that held the part lists once (its copy is stale); one started since read
    # every pointer at start, at this very hash of the part.
    assert _listings(calls) == watcher.lost_part_listings == (1 if started == "before" else 0)
    read = {key for method, key in calls if method == "get" and key.endswith("/current.json")}
    assert read <= {PromotionStore.pointer_key(n) for n in names if part_of(n) in (lost, other)}
    assert watcher.full_listings == 1
    assert calls[-2:] == [("get_if_changed", INDEX_KEY)] * 2  # quiet again after the change
    snapshot = watcher.holder.snapshot()
    assert snapshot[names[0]].promotion.run_id == "run-persistence"
    assert snapshot[names[1]].promotion.run_id == "run-persistence"
    # Rebuilt by its next writer, and lost again: a new hash of it, one listing more.
    listed = watcher.lost_part_listings
    _promote(writer, names[0], "run-ridge", 2)
    counting.inner.delete(part_key(lost))
    for _ in range(3):
        watcher.poll_once()
    assert _listings(counting.reads()) == 1
    assert watcher.lost_part_listings == listed + 1
    assert watcher.holder.snapshot()[names[0]].promotion.run_id == "run-ridge"
    _promote(writer, names[0], "run-persistence", 3)  # the lost part's next writer rebuilds it
    watcher.poll_once()
    assert _listings(counting.reads()) == 0
    assert watcher.full_listings == 1
    assert watcher.holder.snapshot()[names[0]].promotion.run_id == "run-persistence"
