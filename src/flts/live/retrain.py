"""A retraining set from a station's stored observations: what preprocess makes of a
``retrain-requested`` event (docs/architecture.md, rule 18).

The set is stored as a dataset like an upload (``datasets/<dataset_id>/train.csv`` and
``meta.json``, :mod:`flts.datasets`, with ``source: observations`` and the trigger in its
meta) and handed to preprocessing as an upload event of that dataset, so the recipe, the splits,
the config hash (new bytes, a new hash), the trainers, the evaluator and the replicas all run
unchanged. Its rows:

1. the stored observations of the last ``live.retrain_window_days`` behind the newest stored
   row, on the regular grid from the first to the newest (a row that never arrived is a
   missing row, filled by the recipe like a missing cell);
2. when that is fewer than ``live.retrain_min_rows`` rows, the newest earlier rows of the
   champion's own dataset (its train and test files) fill it up to that count, provided they
   end within ``live.late_window_minutes`` of the first observation (a station's live rows
   continue its upload; rows from long before would be joined across a gap);
3. no test file: preprocessing holds out the newest
   :data:`~flts.services.preprocess.HOLDOUT_FRACTION` as the test split, and that part must be
   observed rows. So the candidates and the champion (which the evaluator re-scores on the
   same split) are judged on what the station reports now, not on the data the champion was
   already judged on.

A set shorter than ``live.retrain_min_rows``, or whose test part would not be observed rows,
is refused with a :class:`~flts.exceptions.DataValidationError` saying why (the event is
dead-lettered, the trigger's outcome recorded as refused). The dataset id follows from the
event, so a redelivered request reuses the set it already stored instead of building another.
"""

from __future__ import annotations

import hashlib
import io
import math
import uuid
from typing import Any

import pandas as pd

from flts.data.hashing import content_digest
from flts.data.processed import ProcessedKeys
from flts.data.reader import read_traffic_csv
from flts.data.spec import FeatureSpec
from flts.datasets import DATASETS_ROOT, dataset_keys, new_dataset_id
from flts.events import DatasetUploaded, DatasetUploadedEvent, RetrainRequestedEvent, new_event
from flts.exceptions import DataValidationError
from flts.live.observations import ObservationLog
from flts.promotion import PromotionStore
from flts.services.preprocess import HOLDOUT_FRACTION
from flts.settings import Settings
from flts.storage import ObjectStore


def retraining_dataset(
    store: ObjectStore, settings: Settings, event: RetrainRequestedEvent
) -> DatasetUploadedEvent:
    """Store (or find, on a redelivery) the retraining set of ``event`` and return it as the
    upload event preprocessing handles (never published: the set is processed at once)."""
    token = hashlib.sha256(event.event_id.encode()).hexdigest()[:12]
    dataset_id = new_dataset_id(event.occurred_at, token)
    keys = dataset_keys(dataset_id)
    try:
        meta = store.get_json(keys["meta"])
        train = store.get(keys["train"])
    except KeyError:
        meta, train = _build(store, settings, event, dataset_id, keys)
    payload = DatasetUploaded(
        dataset_id=dataset_id,
        filename=meta["train"]["filename"],
        train_key=keys["train"],
        size_bytes=len(train),
        digest=content_digest(train),
        horizon=meta["horizon"],
        lags=meta["lags"],
    )
    upload = new_event(payload, parent=event, event_id=meta["event_id"])
    assert isinstance(upload, DatasetUploadedEvent)
    return upload


def _build(
    store: ObjectStore,
    settings: Settings,
    event: RetrainRequestedEvent,
    dataset_id: str,
    keys: dict[str, str],
) -> tuple[dict[str, Any], bytes]:
    identifier = event.identifier
    live = settings.live
    log = ObservationLog(store, settings.feature_spec)
    newest = log.newest(identifier)
    if newest is None:
        raise DataValidationError(f"no stored observations of {identifier!r} to retrain on")
    start = newest - pd.Timedelta(days=live.retrain_window_days) + settings.feature_spec.step
    observed = log.read(identifier, start=start, end=newest)
    base = _champion_dataset(store, identifier, settings.feature_spec)
    spec = settings.feature_spec
    if base is not None:
        spec = spec.for_task(horizon=base[0]["horizon"], lags=base[0]["lags"])
    step = spec.step
    grid = pd.date_range(observed.index.min(), newest, freq=step, name=spec.time_column)
    rows = observed.reindex(grid)
    padded = 0
    if base is not None and len(rows) < live.retrain_min_rows:
        earlier = base[1][base[1].index < grid[0]]
        late = pd.Timedelta(minutes=live.late_window_minutes)
        if len(earlier) and earlier.index.max() >= grid[0] - late:
            earlier = earlier.iloc[-(live.retrain_min_rows - len(rows)) :]
            full = pd.date_range(earlier.index.min(), newest, freq=step, name=spec.time_column)
            rows = pd.concat([earlier, rows]).reindex(full)
            padded = len(earlier)
    test_rows = math.floor(HOLDOUT_FRACTION * len(rows))
    problems = []
    if len(rows) < live.retrain_min_rows:
        problems.append(
            f"{len(observed)} stored observation rows of {identifier!r} in the last "
            f"{live.retrain_window_days:g} days and {padded} earlier rows of its dataset make "
            f"{len(rows)} rows; a retraining needs at least {live.retrain_min_rows} "
            "(live.retrain_min_rows)"
        )
    elif len(observed) < test_rows:
        problems.append(
            f"{len(observed)} stored observation rows of {identifier!r} are fewer than the "
            f"{test_rows} rows of the held-out test part: the candidates would be judged on "
            "old data; wait for more observations"
        )
    if problems:
        raise DataValidationError(*problems)
    train = rows.reset_index().to_csv(index=False).encode()
    upload_id = str(uuid.uuid4())  # of the upload event preprocessing handles
    meta: dict[str, Any] = {
        "dataset_id": dataset_id,
        "identifier": identifier,
        "uploaded_at": event.occurred_at.isoformat(),
        "correlation_id": event.correlation_id,
        "event_id": upload_id,
        "horizon": spec.horizon,
        "lags": spec.lags,
        "train": {
            "filename": "observations.csv",
            "key": keys["train"],
            "size_bytes": len(train),
            "digest": content_digest(train),
            "rows": len(rows),
            "start": rows.index[0].isoformat(),
            "end": rows.index[-1].isoformat(),
        },
        "test": None,
        "test_split": f"holdout: the last {HOLDOUT_FRACTION:.0%} of the training rows",
        "source": "observations",
        "rows": {
            "observations": len(observed),
            "padded": padded,
            "missing": int(rows.isna().all(axis=1).sum()),
        },
        "window_days": live.retrain_window_days,
        "base_dataset_id": None if base is None else base[0]["dataset_id"],
        "trigger": {"event_id": event.event_id, **event.payload.model_dump(mode="json")},
    }
    store.put(keys["train"], train)
    store.put_json(keys["meta"], meta)  # last: marks the dataset complete
    return meta, train


def _champion_dataset(
    store: ObjectStore, identifier: str, spec: FeatureSpec
) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """The meta and rows (train then test file) of the dataset the champion was trained on:
    the newest stored dataset of ``identifier`` whose training file has the digest its
    processed data was made from. ``None`` when it is gone (``flts gc``) or unknown."""
    champion = PromotionStore(store).current(identifier)
    if champion is None:
        return None
    try:
        processed = store.get_json(ProcessedKeys.for_hash(champion.config_hash).meta_key)
    except KeyError:
        return None
    digest = (processed.get("input_digests") or {}).get("train")
    candidates = []
    for key in store.list(DATASETS_ROOT):
        if key.endswith("/meta.json"):
            try:
                meta = store.get_json(key)
            except KeyError:
                continue
            if (
                meta.get("identifier") == identifier
                and (meta.get("train") or {}).get("digest") == digest
            ):
                candidates.append(meta)
    if not candidates:
        return None
    meta = max(candidates, key=lambda m: str(m.get("uploaded_at", "")))
    frames = []
    for role in ("train", "test"):
        part = meta.get(role)
        if part:
            frames.append(read_traffic_csv(io.BytesIO(store.get(part["key"])), spec).frame)
    return meta, pd.concat(frames).sort_index()
