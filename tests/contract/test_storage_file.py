"""The storage contract on ``file://``, plus the local-only part of atomic writes: the pointer
is renamed into place, so no temporary file is ever left next to it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flts.storage import ObjectStore

from .storage_suite import POINTER, StorageContract, StoreFactory


class TestFileStore(StorageContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        url = (tmp_path / "store").as_uri()
        return lambda: ObjectStore(url)


def test_root_directory_is_created(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b"
    ObjectStore(root.as_uri())
    assert root.is_dir()


def test_atomic_write_leaves_only_the_pointer_on_disk(tmp_path: Path) -> None:
    store = ObjectStore((tmp_path / "store").as_uri())
    for run in ("a", "b", "c"):
        store.put_json(POINTER, {"run_id": run}, atomic=True)
    files = sorted(p.name for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert files == ["current.json"]
