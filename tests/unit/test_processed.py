"""Processed data survives the object store exactly: the windows trainers rebuild from
Parquet equal the windows of the in-memory recipe."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from flts.data import FeatureSpec, split
from flts.data.processed import ProcessedKeys, is_processed, read_splits, write_processed
from flts.exceptions import DataValidationError
from flts.storage import ObjectStore
from helpers import synthetic_tables


def test_round_trip_gives_identical_windows(spec: FeatureSpec) -> None:
    store = ObjectStore(f"memory://processed-{uuid.uuid4().hex}")
    train, test = synthetic_tables(1_200, 1_000, seed=7, spec=spec, missing_fraction=0.01)
    splits = split(train, test, spec=spec)
    assert not is_processed(store, "abc123")
    keys = write_processed(
        store, splits, config_hash="abc123", canonical_json="{}", input_digests={"train": "x"}
    )
    assert is_processed(store, "abc123")
    assert keys == ProcessedKeys.for_hash("abc123")

    again = read_splits(store, keys)
    assert again.input_scaler == splits.input_scaler
    assert again.clip_bounds == splits.clip_bounds
    before, after = splits.windows(), again.windows()
    for name in ("train", "validation", "test"):
        a, b = getattr(before, name), getattr(after, name)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.targets, b.targets)
        np.testing.assert_array_equal(a.target_times, b.target_times)
    meta = store.get_json(keys.meta_key)
    assert meta["rows"] == {"train": 800, "validation": 200, "test": 200}


def test_incomplete_directory_is_not_processed() -> None:
    store = ObjectStore(f"memory://processed-{uuid.uuid4().hex}")
    keys = ProcessedKeys.for_hash("def456")
    store.put(keys.train_key, b"partial")
    assert not is_processed(store, "def456")
    with pytest.raises(DataValidationError, match="no complete processed data"):
        read_splits(store, keys)
