"""The promotion index (docs/architecture.md, rules 7 and 13): every pointer write records
the pointer's marker in one small object by compare-and-swap; a lost or damaged index is
rebuilt, and a repeated commit repairs a lost update."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import (
    INDEX_KEY,
    PARTS_PREFIX,
    DamagedIndexError,
    IndexReader,
    IndexTop,
    part_key,
    part_of,
    read_index,
)
from flts.storage import ObjectStore
from helpers import CountingStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def promotions() -> PromotionStore:
    return PromotionStore(ObjectStore(f"memory://{uuid.uuid4().hex}"))


def _promotion(identifier: str, run_id: str, minutes: int = 0) -> Promotion:
    return Promotion(
        run_id=run_id,
        model_type="RIDGE",
        config_hash="abcdef0123456789",
        identifier=identifier,
        promoted_at=T0 + timedelta(minutes=minutes),
    )


def _markers(promotions: PromotionStore) -> dict[str, str | None]:
    return {name: promotions.etag(name) for name in promotions.identifiers()}


def test_every_promotion_and_rollback_updates_the_index(promotions: PromotionStore) -> None:
    promotions.record(_promotion("a", "run-1"))
    promotions.record(_promotion("b", "run-2"))
    first = read_index(promotions.store)
    assert first is not None
    assert first.entries == _markers(promotions)
    assert read_index(promotions.store, first.tag) is None  # unchanged since that read

    promotions.record(_promotion("a", "run-3", minutes=1))
    second = read_index(promotions.store, first.tag)
    assert second is not None
    assert second.entries == _markers(promotions)
    assert second.entries["b"] == first.entries["b"]
    assert second.entries["a"] != first.entries["a"]
    assert second.sequence > first.sequence

    promotions.rollback("a")
    third = read_index(promotions.store, second.tag)
    assert third is not None
    assert third.entries == _markers(promotions)
    assert third.entries["a"] != second.entries["a"]


def test_concurrent_writers_lose_no_entry(promotions: PromotionStore) -> None:
    names = [f"cell-{n}" for n in range(8)]
    threads = [
        threading.Thread(target=promotions.record, args=(_promotion(name, f"run-{name}"),))
        for name in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    found = read_index(promotions.store)
    assert found is not None
    assert found.entries == _markers(promotions)
    assert sorted(found.entries) == names


@pytest.mark.parametrize("damage", [None, b"{not json", b'{"version": 7}'])
def test_a_missing_or_damaged_index_is_rebuilt_by_the_next_writer(
    promotions: PromotionStore, damage: bytes | None
) -> None:
    promotions.record(_promotion("a", "run-1"))
    promotions.record(_promotion("b", "run-2"))
    if damage is None:
        promotions.store.delete(INDEX_KEY)
        with pytest.raises(KeyError):
            read_index(promotions.store)
    else:
        promotions.store.put_atomic(INDEX_KEY, damage)
        with pytest.raises(DamagedIndexError):
            read_index(promotions.store)
    promotions.record(_promotion("c", "run-3"))
    found = read_index(promotions.store)
    assert found is not None
    assert found.entries == _markers(promotions)
    assert sorted(found.entries) == ["a", "b", "c"]


def _index_objects(store: ObjectStore) -> dict[str, bytes]:
    return {key: store.get(key) for key in [INDEX_KEY, *store.list(PARTS_PREFIX)]}


def test_repeating_a_commit_repairs_a_lost_index_update(promotions: PromotionStore) -> None:
    promotions.record(_promotion("a", "run-1"))
    before = _index_objects(promotions.store)
    promotion = _promotion("a", "run-2", minutes=1)
    promotions.record(promotion)
    for key, data in before.items():  # as if the writer died before the index
        promotions.store.put_atomic(key, data)
    stale = read_index(promotions.store)
    assert stale is not None
    assert stale.entries["a"] != promotions.etag("a")
    promotions.record(promotion)  # the evaluator (or an operator) retries the same promotion
    repaired = read_index(promotions.store)
    assert repaired is not None
    assert repaired.entries["a"] == promotions.etag("a")


def test_the_index_is_split_by_identifier_and_a_reader_reads_only_changed_parts(
    promotions: PromotionStore,
) -> None:
    names = [f"cell-{n}" for n in range(40)]
    for name in names:
        promotions.record(_promotion(name, f"run-{name}"))
    parts = {part_of(name) for name in names}
    assert len(parts) > 20  # 40 names over 256 parts: spread, not one object
    assert sorted(promotions.store.list(PARTS_PREFIX)) == sorted(part_key(p) for p in parts)
    counting = CountingStore(promotions.store)
    reader = IndexReader(counting)
    first = reader.read(None)
    assert first is not None
    assert first.entries == _markers(promotions)
    counting.reads()
    promotions.record(_promotion("cell-7", "run-again", minutes=1))
    second = reader.read(first.tag)
    assert second is not None
    assert second.entries == _markers(promotions)
    assert counting.reads() == [("get_if_changed", INDEX_KEY), ("get", part_key(part_of("cell-7")))]


def test_a_lost_part_is_rebuilt_and_a_damaged_part_is_reported(promotions: PromotionStore) -> None:
    promotions.record(_promotion("a", "run-1"))
    promotions.record(_promotion("b", "run-2"))
    assert part_of("a") != part_of("b")
    promotions.store.delete(part_key(part_of("a")))
    lost = read_index(promotions.store)  # a reader that never held it: the rest, and what is lost
    assert lost is not None
    assert lost.entries == {"b": promotions.etag("b")}
    assert lost.missing.keys() == {part_of("a")}
    promotions.record(_promotion("a", "run-3", minutes=1))
    found = read_index(promotions.store)
    assert found is not None
    assert found.entries == _markers(promotions)
    assert found.missing == {}
    promotions.store.put_atomic(part_key(part_of("b")), b"{broken")
    with pytest.raises(DamagedIndexError):
        read_index(promotions.store)


def test_a_reader_keeps_a_current_copy_of_a_lost_part(promotions: PromotionStore) -> None:
    """A part lost while the top still names the very bytes a reader holds: that copy is
    the part as the top says, so it stands and costs nothing."""
    promotions.record(_promotion("a", "run-a"))
    promotions.record(_promotion("b", "run-b"))
    counting = CountingStore(promotions.store)
    reader = IndexReader(counting)
    first = reader.read(None)
    assert first is not None
    promotions.store.delete(part_key(part_of("a")))  # lost, no commit in it
    promotions.record(_promotion("b", "run-b2", minutes=1))
    counting.reads()
    second = reader.read(first.tag)
    assert second is not None
    assert second.entries == _markers(promotions)
    assert second.missing == {}
    assert counting.reads() == [("get_if_changed", INDEX_KEY), ("get", part_key(part_of("b")))]


def test_a_reader_drops_a_stale_copy_of_a_lost_part_and_asks_once_per_version(
    promotions: PromotionStore,
) -> None:
    names = ["a", "b", "c"]
    assert len({part_of(name) for name in names}) == 3
    for name in names:
        promotions.record(_promotion(name, f"run-{name}"))
    counting = CountingStore(promotions.store)
    reader = IndexReader(counting)
    first = reader.read(None)
    assert first is not None
    promotions.record(_promotion("a", "run-a2", minutes=1))  # the part changes, then is lost
    lost_digest = IndexTop.model_validate_json(promotions.store.get(INDEX_KEY)).parts[part_of("a")]
    promotions.store.delete(part_key(part_of("a")))
    promotions.record(_promotion("b", "run-b2", minutes=1))
    counting.reads()
    second = reader.read(first.tag)
    assert second is not None
    # The copy of a's part held is older than the top says: no entry for a (its old one
    # would hide run-a2), the part reported with the top's hash of it; b's new entry.
    assert second.entries == {"b": promotions.etag("b"), "c": first.entries["c"]}
    assert second.missing == {part_of("a"): lost_digest}
    assert reader.missing == second.missing
    assert sorted(counting.reads()) == sorted(
        [
            ("get_if_changed", INDEX_KEY),
            ("get", part_key(part_of("a"))),
            ("get", part_key(part_of("b"))),
        ]
    )
    promotions.record(_promotion("c", "run-c2", minutes=1))
    third = reader.read(second.tag)
    assert third is not None
    assert third.entries["c"] == promotions.etag("c")
    assert third.missing == second.missing  # still lost, at the same hash
    # The version of a's part the store lacks is not asked for again.
    assert counting.reads() == [("get_if_changed", INDEX_KEY), ("get", part_key(part_of("c")))]
    promotions.record(_promotion("a", "run-a3", minutes=2))  # its next writer rebuilds it
    fourth = reader.read(third.tag)
    assert fourth is not None
    assert fourth.entries == _markers(promotions)
    assert fourth.missing == {}


class _RacingStore(CountingStore):
    """Runs ``race`` once, just before the first write of ``key``: a concurrent writer that
    gets in between a rebuild's read of the pointers and its write of that part."""

    def __init__(self, inner: ObjectStore, key: str, race: Callable[[], object]) -> None:
        super().__init__(inner)
        self.key, self.race, self.raced = key, race, False

    def _maybe_race(self, key: str) -> None:
        if key == self.key and not self.raced:
            self.raced = True
            self.race()

    def put_atomic(self, key: str, data: bytes) -> None:
        self._maybe_race(key)
        super().put_atomic(key, data)

    def put_if_match(self, key: str, data: bytes, tag: str | None) -> bool:
        self._maybe_race(key)
        return super().put_if_match(key, data, tag)


@pytest.mark.parametrize("lost", ["index", "top"])
def test_a_slow_rebuild_never_overwrites_a_newer_commit(
    promotions: PromotionStore, lost: str
) -> None:
    """The next writer rebuilds every part from a listing of the pointers; a commit of ``a``
    gets in after that listing, before the rebuild writes ``a``'s part."""
    promotions.record(_promotion("a", "run-1"))
    stale = promotions.store.get(part_key(part_of("a")))
    promotions.record(_promotion("a", "run-2", minutes=1))
    promotions.record(_promotion("b", "run-2"))
    if lost == "index":
        for key in _index_objects(promotions.store):
            promotions.store.delete(key)
    else:  # the top, and a's part lags a lost update (so the rebuild rewrites it)
        promotions.store.delete(INDEX_KEY)
        promotions.store.put_atomic(part_key(part_of("a")), stale)
    racing = _RacingStore(
        promotions.store,
        part_key(part_of("a")),
        lambda: promotions.record(_promotion("a", "run-3", minutes=2)),
    )
    PromotionStore(racing).record(_promotion("c", "run-4"))
    assert racing.raced
    assert promotions.current("a") is not None
    assert promotions.current("a").run_id == "run-3"  # type: ignore[union-attr]
    found = read_index(promotions.store)
    assert found is not None
    assert found.entries == _markers(promotions)
    assert found.missing == {}
    top = IndexTop.model_validate_json(promotions.store.get(INDEX_KEY))
    for part, digest in top.parts.items():  # the top names the parts as stored
        assert hashlib.sha256(promotions.store.get(part_key(part))).hexdigest() == digest
