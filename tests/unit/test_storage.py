"""Object store over fsspec on the local backends (memory:// and file://)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.exceptions import ConfigurationError, DataValidationError
from flts.storage import ObjectStore, check_key


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param == "memory":
        url = f"memory://flts-test-{uuid.uuid4().hex}"
    else:
        url = (tmp_path / "store").as_uri()
    store = ObjectStore(url)
    yield store
    if request.param == "memory":  # the memory filesystem is process-global
        store.fs.rm(store.root, recursive=True)


def test_put_get_list_delete(store: ObjectStore) -> None:
    store.put("processed/abc/train.parquet", b"1")
    store.put("processed/abc/meta.json", b"2")
    store.put("other/x", b"3")
    assert store.get("processed/abc/train.parquet") == b"1"
    assert list(store.list("processed")) == [
        "processed/abc/meta.json",
        "processed/abc/train.parquet",
    ]
    store.delete("other/x")
    assert not store.exists("other/x")
    assert list(store.list("missing")) == []
    with pytest.raises(KeyError):
        store.get("other/x")


def test_atomic_json_overwrite_leaves_no_temporaries(store: ObjectStore) -> None:
    store.put_json("model-promotion/global/current.json", {"run_id": "a"}, atomic=True)
    store.put_json("model-promotion/global/current.json", {"run_id": "b"}, atomic=True)
    assert store.get_json("model-promotion/global/current.json") == {"run_id": "b"}
    assert list(store.list("model-promotion")) == ["model-promotion/global/current.json"]


@pytest.mark.parametrize("key", ["../etc/passwd", "a//b", "/abs", ".hidden", "a/./b", "a b", ""])
def test_unsafe_keys_are_rejected(key: str) -> None:
    with pytest.raises(DataValidationError, match="invalid object key"):
        check_key(key)


def test_unknown_scheme_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot open object store"):
        ObjectStore("nosuchscheme://bucket")
