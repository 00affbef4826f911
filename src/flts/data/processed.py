"""Processed data in the object store: what preprocessing writes once per config hash and
what trainers, the evaluator and batch inference read back.

Layout under ``processed/<config_hash>/``::

    train.parquet, validation.parquet, test.parquet   time-indexed splits (spec.inputs)
    scaler.json          the input MinMaxScaler fitted on the training part (targets subset it)
    feature_spec.json    the FeatureSpec every model trained on this data must carry
    recipe.json          the Recipe that produced it
    config.json          {"config_hash": ..., "canonical": <the canonical JSON hashed>}
    meta.json            row counts, columns, input digests, clip bounds, created_at

``meta.json`` is written last, so its presence marks a complete directory (a crashed
preprocess leaves no meta and is recomputed).
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict

from flts.data.prepare import Splits
from flts.data.scaling import MinMaxScaler
from flts.data.spec import FeatureSpec, Recipe
from flts.exceptions import DataValidationError
from flts.storage import ObjectStore

PROCESSED_ROOT = "processed"


class ProcessedKeys(BaseModel):
    """Object keys of one processed directory (the claim check's contents)."""

    model_config = ConfigDict(frozen=True)

    config_hash: str
    prefix: str
    train_key: str
    validation_key: str
    test_key: str
    scaler_key: str
    feature_spec_key: str
    recipe_key: str
    config_key: str
    meta_key: str

    @classmethod
    def for_hash(cls, config_hash: str) -> ProcessedKeys:
        prefix = f"{PROCESSED_ROOT}/{config_hash}"
        return cls(
            config_hash=config_hash,
            prefix=prefix,
            train_key=f"{prefix}/train.parquet",
            validation_key=f"{prefix}/validation.parquet",
            test_key=f"{prefix}/test.parquet",
            scaler_key=f"{prefix}/scaler.json",
            feature_spec_key=f"{prefix}/feature_spec.json",
            recipe_key=f"{prefix}/recipe.json",
            config_key=f"{prefix}/config.json",
            meta_key=f"{prefix}/meta.json",
        )


def _to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=True)
    return buffer.getvalue()


def _from_parquet(data: bytes, spec: FeatureSpec, key: str) -> pd.DataFrame:
    frame = pd.read_parquet(io.BytesIO(data))
    missing = [c for c in spec.inputs if c not in frame.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise DataValidationError(f"{key} is not a processed split for this spec: {missing}")
    frame.index = frame.index.as_unit("ns")
    return frame[list(spec.inputs)]


def is_processed(store: ObjectStore, config_hash: str) -> bool:
    """True when a complete processed directory exists for ``config_hash``."""
    return store.exists(ProcessedKeys.for_hash(config_hash).meta_key)


def write_processed(
    store: ObjectStore,
    splits: Splits,
    *,
    config_hash: str,
    canonical_json: str,
    input_digests: dict[str, str],
) -> ProcessedKeys:
    """Persist ``splits`` under ``processed/<config_hash>/``; ``meta.json`` goes last."""
    if splits.test is None:
        raise DataValidationError("processed data needs a test split")
    keys = ProcessedKeys.for_hash(config_hash)
    store.put(keys.train_key, _to_parquet(splits.train))
    store.put(keys.validation_key, _to_parquet(splits.validation))
    store.put(keys.test_key, _to_parquet(splits.test))
    store.put(keys.scaler_key, splits.input_scaler.to_json().encode())
    store.put(keys.feature_spec_key, splits.spec.model_dump_json(indent=2).encode())
    store.put(keys.recipe_key, splits.recipe.model_dump_json(indent=2).encode())
    store.put_json(
        keys.config_key, {"config_hash": config_hash, "canonical": json.loads(canonical_json)}
    )
    meta: dict[str, Any] = {
        "config_hash": config_hash,
        "rows": {
            "train": len(splits.train),
            "validation": len(splits.validation),
            "test": len(splits.test),
        },
        "columns": list(splits.spec.inputs),
        "targets": list(splits.spec.targets),
        "input_digests": input_digests,
        "clip_bounds": {k: list(v) for k, v in splits.clip_bounds.items()},
        "created_at": datetime.now(UTC).isoformat(),
    }
    store.put_json(keys.meta_key, meta)
    return keys


def read_splits(store: ObjectStore, keys: ProcessedKeys) -> Splits:
    """Load a processed directory back into :class:`Splits` (windows via ``.windows()``)."""
    if not store.exists(keys.meta_key):
        raise DataValidationError(f"no complete processed data at {keys.prefix}")
    spec = FeatureSpec.model_validate_json(store.get(keys.feature_spec_key))
    recipe = Recipe.model_validate_json(store.get(keys.recipe_key))
    meta = store.get_json(keys.meta_key)
    return Splits(
        spec=spec,
        recipe=recipe,
        train=_from_parquet(store.get(keys.train_key), spec, keys.train_key),
        validation=_from_parquet(store.get(keys.validation_key), spec, keys.validation_key),
        test=_from_parquet(store.get(keys.test_key), spec, keys.test_key),
        input_scaler=MinMaxScaler.from_json(store.get(keys.scaler_key)),
        clip_bounds={k: (float(v[0]), float(v[1])) for k, v in meta["clip_bounds"].items()},
    )
