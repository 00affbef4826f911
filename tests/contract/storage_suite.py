"""The object-store contract: every backend must pass these assertions unchanged.

A backend's test module subclasses :class:`StorageContract` and provides one fixture,
``store_factory``: a callable that opens a *new* :class:`ObjectStore` object on the same root
(a unique memory:// name, a temporary directory, an S3 bucket or bucket prefix). Opening a new
object per reader stands in for another process: what one object writes, another must see,
with no stale listings in between.
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Callable

import pytest

from flts.exceptions import DataValidationError
from flts.promotion import Promotion, PromotionStore
from flts.storage import STREAM_BLOCK, ObjectStore

StoreFactory = Callable[[], ObjectStore]

POINTER = "model-promotion/global/current.json"

UNSAFE_KEYS = ["../etc/passwd", "a/../../b", "a//b", "/abs", ".hidden", "a/./b", "a b", "", "a\\b"]


def _document(tag: str, size: int) -> dict[str, str]:
    """A JSON document of about ``size`` bytes whose every field says ``tag``, so a reader can
    tell a whole document from a mix of two."""
    return {"run_id": tag, "padding": tag * (size // len(tag))}


class StorageContract:
    """Assertions every object-store backend must satisfy."""

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> ObjectStore:
        return store_factory()

    # ---------------------------------------------------------------- basic operations

    def test_put_get_list_delete(self, store: ObjectStore) -> None:
        store.put("processed/abc/train.parquet", b"1")
        store.put("processed/abc/meta.json", b"2")
        store.put("other/x", b"3")
        assert store.get("processed/abc/train.parquet") == b"1"
        assert store.exists("processed/abc/meta.json")
        assert list(store.list("processed")) == [
            "processed/abc/meta.json",
            "processed/abc/train.parquet",
        ]
        assert list(store.list("processed/abc/")) == list(store.list("processed/abc"))
        store.delete("other/x")
        assert not store.exists("other/x")
        assert list(store.list("other")) == []
        assert list(store.list("missing")) == []
        with pytest.raises(KeyError):
            store.get("other/x")

    def test_binary_and_empty_objects_round_trip(self, store: ObjectStore) -> None:
        blob = bytes(range(256)) * 64
        store.put("blobs/all-bytes.bin", blob)
        store.put("blobs/empty", b"")
        assert store.get("blobs/all-bytes.bin") == blob
        assert store.get("blobs/empty") == b""
        assert store.exists("blobs/empty")

    def test_a_file_is_stored_from_its_start_in_blocks(self, store: ObjectStore) -> None:
        """An upload is stored from its spooled file, never read into memory whole; bigger
        than one block, and read to its end before (the digest was taken from it)."""
        data = bytes(range(256)) * (STREAM_BLOCK // 256 + 1000)
        with tempfile.TemporaryFile() as spooled:
            spooled.write(data)
            store.put("datasets/d/train.csv", spooled)
        assert store.get("datasets/d/train.csv") == data

    def test_json_round_trip(self, store: ObjectStore) -> None:
        document = {"b": [1, 2.5, None], "a": {"nested": "ü"}}
        store.put_json("docs/x.json", document)
        assert store.get_json("docs/x.json") == document

    def test_overwrite_replaces_the_whole_object(self, store: ObjectStore) -> None:
        store.put("k/v", b"a much longer first version")
        store.put("k/v", b"short")
        assert store.get("k/v") == b"short"

    def test_list_is_by_path_segment_not_by_string_prefix(self, store: ObjectStore) -> None:
        store.put("model/a", b"1")
        store.put("models/b", b"2")
        store.put("model-x/c", b"3")
        assert list(store.list("model")) == ["model/a"]

    def test_allowed_key_characters_round_trip(self, store: ObjectStore) -> None:
        key = "datasets/station=PobleSec/v-1_2.0/train.csv"
        store.put(key, b"x")
        assert store.get(key) == b"x"
        assert list(store.list("datasets")) == [key]

    # ---------------------------------------------------------------- missing objects

    def test_missing_object_is_a_key_error(self, store: ObjectStore) -> None:
        with pytest.raises(KeyError, match=r"never/written\.json"):
            store.get("never/written.json")
        with pytest.raises(KeyError):
            store.get_json("never/written.json")
        assert not store.exists("never/written.json")

    def test_deleting_a_missing_object_is_a_no_op(self, store: ObjectStore) -> None:
        store.delete("never/written")
        assert list(store.list("never")) == []

    # ---------------------------------------------------------------- other readers

    def test_another_store_object_sees_writes_and_deletes(
        self, store: ObjectStore, store_factory: StoreFactory
    ) -> None:
        reader = store_factory()
        assert list(reader.list("shared")) == []  # a listing that must not be cached...
        store.put("shared/one", b"1")
        assert list(reader.list("shared")) == ["shared/one"]  # ...so the write shows up
        assert reader.get("shared/one") == b"1"
        store.put("shared/two", b"2")
        store.delete("shared/one")
        assert list(reader.list("shared")) == ["shared/two"]
        assert not reader.exists("shared/one")

    # ---------------------------------------------------------------- atomic pointer

    def test_atomic_json_overwrite_leaves_no_temporaries(self, store: ObjectStore) -> None:
        store.put_json(POINTER, {"run_id": "a"}, atomic=True)
        store.put_json(POINTER, {"run_id": "b"}, atomic=True)
        assert store.get_json(POINTER) == {"run_id": "b"}
        assert list(store.list("model-promotion")) == [POINTER]

    def test_pointer_overwrite_is_seen_whole_by_a_concurrent_reader(
        self, store: ObjectStore, store_factory: StoreFactory
    ) -> None:
        """A reader polling the pointer while it is rewritten sees one whole document or the
        other, never a torn or empty one (documents of 256 KiB so a torn write would show)."""
        versions = {tag: _document(tag, 256 * 1024) for tag in ("old", "new")}
        store.put_json(POINTER, versions["old"], atomic=True)
        reader = store_factory()
        writes, seen, problems = 20, set(), []
        done = threading.Event()

        def read_until_done() -> None:
            for _ in range(10_000):  # bounded; the writer normally finishes long before
                try:
                    document = json.loads(reader.get(POINTER))
                except (KeyError, ValueError) as exc:  # missing or torn: both are failures
                    problems.append(repr(exc)[:200])
                else:
                    if document not in versions.values():
                        problems.append(f"mixed document {str(document)[:80]}")
                    seen.add(document["run_id"])
                if done.is_set():
                    return

        thread = threading.Thread(target=read_until_done)
        thread.start()
        try:
            for i in range(writes):
                store.put_json(POINTER, versions["new" if i % 2 == 0 else "old"], atomic=True)
        finally:
            done.set()
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert problems == []
        assert seen  # the reader did read
        assert list(store.list("model-promotion")) == [POINTER]

    def test_promotion_pointer_and_history(self, store: ObjectStore) -> None:
        promotions = PromotionStore(store)
        assert promotions.current() is None  # readers tolerate a missing pointer
        assert promotions.etag() is None
        promotions.record(Promotion(run_id="run-1", model_type="RIDGE", config_hash="c" * 16))
        first_etag = promotions.etag()
        second = promotions.record(
            Promotion(run_id="run-2", model_type="LSTM", config_hash="c" * 16)
        )
        current = promotions.current()
        assert current is not None
        assert (current.run_id, current.previous_run_id) == ("run-2", "run-1")
        assert current == second
        assert [p.run_id for p in promotions.history()] == ["run-1", "run-2"]
        assert promotions.etag() not in (None, first_etag)

    # ---------------------------------------------------------------- conditional writes

    def test_put_if_absent_creates_once(self, store: ObjectStore) -> None:
        assert store.put_if_absent("evaluations/global/h.json", b"first")
        assert not store.put_if_absent("evaluations/global/h.json", b"second")
        assert store.get("evaluations/global/h.json") == b"first"
        assert list(store.list("evaluations")) == ["evaluations/global/h.json"]

    def test_only_one_of_many_concurrent_creators_wins(self, store_factory: StoreFactory) -> None:
        """Writers in their own store objects (standing in for processes) race to create one
        key: exactly one is told it won, and the object holds that writer's bytes."""
        writers, key = 6, "evaluations/global/raced.json"
        stores = [store_factory() for _ in range(writers)]
        start = threading.Barrier(writers)
        won: list[int] = []

        def create(index: int) -> None:
            start.wait()
            if stores[index].put_if_absent(key, f"writer-{index}".encode()):
                won.append(index)

        threads = [threading.Thread(target=create, args=(i,)) for i in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(won) == 1
        assert stores[0].get(key) == f"writer-{won[0]}".encode()

    def test_put_if_match_replaces_only_the_version_read(self, store: ObjectStore) -> None:
        with pytest.raises(KeyError):
            store.get_versioned(POINTER)
        assert not store.put_if_match(POINTER, b"x", "no-such-version")  # absent: no match
        assert not store.exists(POINTER)
        assert store.put_if_match(POINTER, b"v1", None)  # None: only if absent
        first = store.get_versioned(POINTER)
        assert first.data == b"v1"
        assert store.put_if_match(POINTER, b"v2", first.tag)
        second = store.get_versioned(POINTER)
        assert (second.data, second.tag != first.tag) == (b"v2", True)
        assert not store.put_if_match(POINTER, b"stale", first.tag)  # someone wrote since
        assert not store.put_if_match(POINTER, b"exists", None)
        assert store.get(POINTER) == b"v2"
        assert list(store.list("model-promotion")) == [POINTER]  # no lock files or temporaries

    def test_conditional_read_answers_only_a_changed_version(self, store: ObjectStore) -> None:
        key = "model-promotion-index.json"
        with pytest.raises(KeyError):
            store.get_if_changed(key, "any-version")
        assert store.put_if_absent(key, b"v1")
        first = store.get_if_changed(key, None)  # no tag: always the object
        assert first is not None
        assert first.data == b"v1"
        assert first == store.get_versioned(key)
        assert store.get_if_changed(key, first.tag) is None  # unchanged since that read
        assert store.put_if_match(key, b"v2", first.tag)
        second = store.get_if_changed(key, first.tag)
        assert second is not None
        assert second.data == b"v2"
        assert store.get_if_changed(key, second.tag) is None

    def test_concurrent_compare_and_swap_loses_no_update(self, store_factory: StoreFactory) -> None:
        """Read-modify-write loops in several store objects: with compare-and-swap every
        increment survives (a blind overwrite would lose some)."""
        writers, increments, key = 4, 5, "counters/n"
        assert store_factory().put_if_absent(key, b"0")

        def work() -> None:
            store = store_factory()
            for _ in range(increments):
                while True:
                    current = store.get_versioned(key)
                    if store.put_if_match(key, str(int(current.data) + 1).encode(), current.tag):
                        break

        threads = [threading.Thread(target=work) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert int(store_factory().get(key)) == writers * increments

    # ---------------------------------------------------------------- key safety

    @pytest.mark.parametrize("key", UNSAFE_KEYS)
    def test_unsafe_keys_are_rejected_before_any_io(self, store: ObjectStore, key: str) -> None:
        operations: list[Callable[[], object]] = [
            lambda: store.put(key, b"x"),
            lambda: store.put_atomic(key, b"x"),
            lambda: store.get(key),
            lambda: store.exists(key),
            lambda: store.delete(key),
            lambda: list(store.list(key)),
            lambda: store.put_if_absent(key, b"x"),
            lambda: store.put_if_match(key, b"x", "tag"),
            lambda: store.get_versioned(key),
        ]
        for operation in operations:
            with pytest.raises(DataValidationError, match="invalid object key"):
                operation()
