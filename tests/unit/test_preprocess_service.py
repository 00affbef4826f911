"""Preprocess service: an upload becomes processed data plus two claim checks; the same
content again reuses the processed directory; bad data is a DataValidationError."""

from __future__ import annotations

import io
import json
import uuid

import pandas as pd
import pytest

from flts.data.hashing import config_hash, content_digest
from flts.data.processed import ProcessedKeys, read_splits
from flts.data.spec import FeatureSpec
from flts.data.synthetic import synthetic_traffic
from flts.events import (
    DATASET_UPLOADED,
    INFERENCE_DATA,
    TRAINING_DATA,
    DatasetUploaded,
    DatasetUploadedEvent,
    Event,
    InferenceDataEvent,
    TrainingDataEvent,
    new_event,
)
from flts.exceptions import DataValidationError
from flts.services import preprocess
from flts.services.context import ServiceContext
from flts.services.preprocess import HOLDOUT_RULE, PreprocessService


@pytest.fixture
def frames() -> tuple[bytes, bytes]:
    full = synthetic_traffic(400, seed=5, missing_fraction=0.01)
    return (
        full.iloc[:300].to_csv(index=False).encode(),
        full.iloc[300:].to_csv(index=False).encode(),
    )


def _upload(
    context: ServiceContext,
    train: bytes,
    test: bytes | None,
    identifier: str = "LesCorts",
    **task: int,
) -> DatasetUploadedEvent:
    """Store the CSVs as the gateway would and build its event."""
    dataset_id = uuid.uuid4().hex
    train_key = f"datasets/{dataset_id}/train.csv"
    test_key = None if test is None else f"datasets/{dataset_id}/test.csv"
    context.store.put(train_key, train)
    if test is not None and test_key is not None:
        context.store.put(test_key, test)
    event = new_event(
        DatasetUploaded(
            dataset_id=dataset_id,
            filename="train.csv",
            train_key=train_key,
            test_key=test_key,
            size_bytes=len(train),
            digest=content_digest(train),
            **task,
        ),
        identifier=identifier,
    )
    assert isinstance(event, DatasetUploadedEvent)
    return event


def _drain(context: ServiceContext, topic: str) -> list[Event]:
    events: list[Event] = []
    context.bus.consume(topic, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return events


def test_writes_processed_data_and_publishes_both_events(
    context: ServiceContext, frames: tuple[bytes, bytes]
) -> None:
    train, test = frames
    event = _upload(context, train, test)
    PreprocessService(context).handle(event)

    settings = context.settings
    expected, canonical = config_hash(
        recipe=settings.recipe,
        spec=settings.feature_spec,
        input_digests={"train": content_digest(train), "test": content_digest(test)},
        seed=0,
    )
    keys = ProcessedKeys.for_hash(expected)
    store = context.store
    assert store.get_json(keys.config_key) == {
        "config_hash": expected,
        "canonical": json.loads(canonical),
    }
    meta = store.get_json(keys.meta_key)
    assert meta["rows"] == {"train": 240, "validation": 60, "test": 100}
    splits = read_splits(store, keys)
    assert splits.test is not None
    assert len(splits.test) == 100
    assert not splits.test.isna().any().any()  # NaN -> 0 applied to the test split too

    (training,) = _drain(context, TRAINING_DATA)
    (inference,) = _drain(context, INFERENCE_DATA)
    assert isinstance(training, TrainingDataEvent)
    assert isinstance(inference, InferenceDataEvent)
    for child in (training, inference):
        assert child.config_hash == expected
        assert child.payload.config_hash == expected
        assert child.correlation_id == event.correlation_id
        assert child.identifier == "LesCorts"
        assert child.event_id != event.event_id
        assert child.payload.test_key == keys.test_key
        assert child.payload.scaler_key == keys.scaler_key
        assert child.payload.meta_key == keys.meta_key
        assert child.payload.processed_prefix == keys.prefix
    assert training.payload.train_key == keys.train_key
    assert training.payload.validation_key == keys.validation_key


def test_same_content_reuses_the_hash_without_recomputing(
    context: ServiceContext, frames: tuple[bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = PreprocessService(context)
    train, test = frames
    first = service.process(_upload(context, train, test))
    created = context.store.get_json(first.meta_key)["created_at"]

    def must_not_run(*args: object, **kwargs: object) -> ProcessedKeys:
        raise AssertionError("write_processed called for an already processed hash")

    monkeypatch.setattr(preprocess, "write_processed", must_not_run)
    again = _upload(context, train, test, identifier="ElBorn")  # new dataset id, same bytes
    service.handle(again)
    assert context.store.get_json(first.meta_key)["created_at"] == created
    events = _drain(context, TRAINING_DATA)
    assert [e.config_hash for e in events] == [first.config_hash]
    assert events[0].correlation_id == again.correlation_id

    # Different test bytes: a different hash, so it is computed (and the spy fires).
    with pytest.raises(AssertionError, match="write_processed"):
        service.handle(_upload(context, train, test[: len(test) // 2 + 200]))


def test_without_test_file_holds_out_the_tail(
    context: ServiceContext, frames: tuple[bytes, bytes]
) -> None:
    train, test = frames
    service = PreprocessService(context)
    keys = service.process(_upload(context, train, None))
    with_test = service.process(_upload(context, train, test))
    assert keys.config_hash != with_test.config_hash
    meta = context.store.get_json(keys.meta_key)
    assert meta["input_digests"] == {"train": content_digest(train), "test": HOLDOUT_RULE}
    assert meta["rows"] == {"train": 192, "validation": 48, "test": 60}
    splits = read_splits(context.store, keys)
    assert splits.test is not None
    # The held-out rows are the last 60 rows of the file, after the validation part.
    source = pd.read_csv(io.BytesIO(train))
    assert str(splits.test.index[0]) == source["time"].iloc[240]
    assert splits.validation.index[-1] < splits.test.index[0]


def test_bad_csv_raises_data_validation_error(context: ServiceContext) -> None:
    frame = synthetic_traffic(200, seed=1).drop(columns=["rb_up"])
    frame = frame.astype({"down": object})
    frame.loc[3, "down"] = "n/a?"
    with pytest.raises(DataValidationError) as caught:
        PreprocessService(context).handle(
            _upload(context, frame.to_csv(index=False).encode(), None)
        )
    assert caught.value.problems == ("train: missing input columns ['rb_up']",)
    assert _drain(context, TRAINING_DATA) == []
    assert list(context.store.list("processed")) == []


def test_digest_mismatch_is_rejected(context: ServiceContext, frames: tuple[bytes, bytes]) -> None:
    train, test = frames
    event = _upload(context, train, test)
    context.store.put(event.payload.train_key, train.replace(b"2018", b"2019", 1))
    with pytest.raises(DataValidationError, match="digest"):
        PreprocessService(context).handle(event)


def test_consumed_from_the_bus_after_a_gateway_upload(
    context: ServiceContext, frames: tuple[bytes, bytes]
) -> None:
    train, test = frames
    event = _upload(context, train, test)
    context.bus.publish(DATASET_UPLOADED, event)
    context.bus.publish(DATASET_UPLOADED, event)  # a duplicate delivery changes nothing
    service = PreprocessService(context)
    stats = context.bus.consume(service.topics, service.group, service.handle, max_idle=0.3)
    assert stats.handled == 1
    assert stats.duplicates == 1
    assert len(_drain(context, TRAINING_DATA)) == 1
    assert len(_drain(context, INFERENCE_DATA)) == 1


def test_the_uploads_own_horizon_and_lags_shape_the_data_and_the_hash(
    context: ServiceContext, frames: tuple[bytes, bytes]
) -> None:
    train, test = frames
    default = PreprocessService(context).process(_upload(context, train, test))
    own = PreprocessService(context).process(_upload(context, train, test, horizon=5, lags=6))
    assert own.config_hash != default.config_hash
    spec = FeatureSpec.model_validate(context.store.get_json(own.feature_spec_key))
    assert (spec.horizon, spec.lags) == (5, 6)
    default_spec = FeatureSpec.model_validate(context.store.get_json(default.feature_spec_key))
    assert (default_spec.horizon, default_spec.lags) == (1, 10)
