"""The storage contract on ``memory://``, plus what holds for every URL: key validation and
the error for an unknown scheme."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flts.exceptions import ConfigurationError, DataValidationError
from flts.storage import ObjectStore, check_key

from .storage_suite import UNSAFE_KEYS, StorageContract, StoreFactory


class TestMemoryStore(StorageContract):
    @pytest.fixture
    def store_factory(self) -> Iterator[StoreFactory]:
        url = f"memory://flts-test-{uuid.uuid4().hex}"
        opened: list[ObjectStore] = []

        def factory() -> ObjectStore:
            opened.append(ObjectStore(url))
            return opened[-1]

        yield factory
        if opened:  # the memory filesystem is process-global: leave nothing behind
            root = opened[0]
            if root.fs.exists(root.root):
                root.fs.rm(root.root, recursive=True)


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected(key: str) -> None:
    with pytest.raises(DataValidationError, match="invalid object key"):
        check_key(key)


@pytest.mark.parametrize("key", ["a", "a/b.c", "station=ElBorn/v1_2-3.parquet", "A" * 128])
def test_safe_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


def test_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot open object store"):
        ObjectStore("nosuchscheme://bucket")
