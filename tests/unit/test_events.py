"""Event envelopes: round trips, and one precise line for every way bytes can be wrong."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from flts.events import (
    EVENT_CLASSES,
    MAX_EVENT_BYTES,
    MODEL_SELECTED,
    SCHEMA_VERSION,
    TOPICS,
    DatasetUploaded,
    Envelope,
    Event,
    InferenceData,
    ModelSelected,
    ModelTraining,
    ModelTrainingEvent,
    Payload,
    TrainingData,
    TrainingDataEvent,
    TrainingStatus,
    decode,
    dlq_topic,
    encode,
    new_event,
)
from flts.exceptions import DataValidationError, EventValidationError

HASH = "ab12" * 16
PREFIX = f"processed/ElBorn/{HASH}"


def _uploaded() -> Payload:
    return DatasetUploaded(
        dataset_id="up-1",
        filename="ElBorn train.csv",
        train_key="raw/up-1/train.csv",
        test_key="raw/up-1/test.csv",
        size_bytes=1024,
        digest="sha256:" + "f" * 64,
    )


def _training() -> Payload:
    return TrainingData(
        config_hash=HASH,
        processed_prefix=PREFIX,
        train_key=f"{PREFIX}/train.parquet",
        validation_key=f"{PREFIX}/validation.parquet",
        test_key=f"{PREFIX}/test.parquet",
        scaler_key=f"{PREFIX}/scaler.json",
        feature_spec_key=f"{PREFIX}/feature_spec.json",
        meta_key=f"{PREFIX}/meta.json",
    )


def _inference() -> Payload:
    return InferenceData(
        config_hash=HASH,
        processed_prefix=PREFIX,
        test_key=f"{PREFIX}/test.parquet",
        scaler_key=f"{PREFIX}/scaler.json",
        feature_spec_key=f"{PREFIX}/feature_spec.json",
        meta_key=f"{PREFIX}/meta.json",
    )


def _training_status() -> Payload:
    return ModelTraining(
        status=TrainingStatus.SUCCESS, model_type="GRU", run_id="r1", train_seconds=12.5
    )


def _selected() -> Payload:
    return ModelSelected(
        run_id="r2",
        model_type="RIDGE",
        previous_run_id="r1",
        scores={"nrmse": 0.816, "mae5": 1.5},
        promoted_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )


PAYLOADS: list[Callable[[], Payload]] = [
    _uploaded,
    _training,
    _inference,
    _training_status,
    _selected,
]


def _good() -> dict[str, Any]:
    """A valid model-training event as a JSON-ready dict, to break one field at a time."""
    return dict(json.loads(encode(new_event(_training_status(), identifier="ElBorn"))))


def _error(raw: dict[str, Any] | bytes) -> str:
    data = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    with pytest.raises(EventValidationError) as info:
        decode(data)
    message = str(info.value)
    assert "\n" not in message  # one line, fit for a log line and a DLQ header
    return message


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("make", PAYLOADS, ids=lambda f: f.__name__.strip("_"))
def test_every_event_type_round_trips(make: Callable[[], Payload]) -> None:
    event = new_event(make(), correlation_id="run-42", identifier="LesCorts")
    back = decode(encode(event))
    assert back == event
    assert type(back) is type(event)
    assert back.schema_version == SCHEMA_VERSION
    assert back.occurred_at.tzinfo is not None


def test_each_topic_has_exactly_one_event_class() -> None:
    assert set(EVENT_CLASSES) == set(TOPICS)
    for topic, cls in EVENT_CLASSES.items():
        assert cls.topic == topic
        with pytest.raises(ValidationError, match="type must be"):
            cls.model_validate({"type": "not-" + topic})


def test_registering_a_topic_twice_is_refused() -> None:
    with pytest.raises(TypeError, match="registered twice"):

        class _Again(Envelope, topic=MODEL_SELECTED):
            payload: ModelSelected


def test_defaults_give_fresh_ids_and_utc_now() -> None:
    a, b = new_event(_uploaded()), new_event(_uploaded())
    assert a.event_id != b.event_id
    assert a.correlation_id != b.correlation_id
    assert a.identifier == "global"
    assert a.occurred_at.tzinfo == UTC
    assert abs(datetime.now(UTC) - a.occurred_at) < timedelta(seconds=5)


def test_occurred_at_is_normalised_to_utc() -> None:
    cest = timezone(timedelta(hours=2))
    event = ModelTrainingEvent(
        payload=_training_status(), occurred_at=datetime(2024, 5, 1, 14, 0, tzinfo=cest)
    )
    assert event.occurred_at == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)


def test_follow_up_events_inherit_the_run_context() -> None:
    upload = new_event(_uploaded(), correlation_id="run-7", identifier="PobleSec")
    processed = new_event(_training(), parent=upload)
    assert (processed.correlation_id, processed.identifier) == ("run-7", "PobleSec")
    assert processed.config_hash == HASH  # taken from the payload
    status = new_event(_training_status(), parent=processed)
    assert (status.correlation_id, status.config_hash) == ("run-7", HASH)
    assert status.event_id != processed.event_id


def test_envelope_and_payload_config_hash_must_agree() -> None:
    with pytest.raises(EventValidationError, match=r"differs from payload\.config_hash"):
        new_event(_training(), config_hash="0" * 64)


def test_a_bare_envelope_cannot_be_encoded() -> None:
    bare = Envelope(type="training-data", payload=Payload())
    with pytest.raises(EventValidationError, match="bare Envelope"):
        encode(bare)


def test_oversized_events_are_refused_both_ways() -> None:
    huge = ModelTrainingEvent(
        payload=ModelTraining(status=TrainingStatus.FAILED, model_type="GRU", error="x" * 4000),
        correlation_id="c" * 128,
    )
    assert len(encode(huge)) < MAX_EVENT_BYTES
    assert "over the limit" in _error(b" " * (MAX_EVENT_BYTES + 1))


def test_topics_and_dead_letter_topics() -> None:
    assert dlq_topic("training-data") == "dlq.training-data"
    with pytest.raises(EventValidationError, match="invalid topic name"):
        dlq_topic("bad topic")


def test_event_validation_error_is_a_data_error() -> None:
    """Boundaries map it to 422 and retries skip it, like any bad data."""
    assert issubclass(EventValidationError, DataValidationError)
    assert EventValidationError.http_status == 422


# ---------------------------------------------------------------------------- decode errors


def test_malformed_json() -> None:
    assert _error(b'{"schema_version": 1,').startswith("malformed JSON:")
    assert _error(b"\xff\xfe").startswith("malformed JSON:")


def test_not_an_object() -> None:
    assert _error(b"[1, 2]") == "event must be a JSON object, got list"


def test_unknown_type() -> None:
    raw = _good() | {"type": "model-deleted"}
    assert _error(raw) == (
        "unknown event type 'model-deleted'; known: dataset-uploaded, training-data, "
        "inference-data, model-training, model-selected, observations, observations-stored, "
        "forecasts, retrain-requested"
    )


def test_schema_version_newer_than_supported() -> None:
    raw = _good() | {"schema_version": SCHEMA_VERSION + 1}
    assert _error(raw) == (
        f"schema_version {SCHEMA_VERSION + 1} is newer than supported {SCHEMA_VERSION}; "
        "upgrade flts"
    )


@pytest.mark.parametrize("version", [None, "1", True, 1.0])
def test_schema_version_must_be_an_integer(version: object) -> None:
    raw = _good() | {"schema_version": version}
    assert _error(raw).startswith("schema_version must be an integer")


def test_schema_version_zero_is_rejected() -> None:
    assert _error(_good() | {"schema_version": 0}).startswith("schema_version:")


def test_missing_fields_are_each_named() -> None:
    raw = _good()
    del raw["correlation_id"]  # has a default: still fine
    del raw["payload"]["model_type"]
    del raw["payload"]["status"]
    assert _error(raw) == "payload.status: Field required; payload.model_type: Field required"


def test_missing_payload() -> None:
    raw = _good()
    del raw["payload"]
    assert _error(raw) == "payload: Field required"


def test_unknown_payload_field_is_rejected() -> None:
    raw = _good()
    raw["payload"]["gpu"] = "A100"
    assert _error(raw) == "payload.gpu: Extra inputs are not permitted"


def test_naive_timestamp_is_rejected() -> None:
    raw = _good() | {"occurred_at": "2024-05-01T12:00:00"}
    assert _error(raw).startswith("occurred_at: Input should have timezone info")


def test_payload_of_the_wrong_type_is_rejected() -> None:
    """Same-shaped payloads do not leak across types: the type field decides."""
    event = new_event(_training())
    raw = json.loads(encode(event)) | {"type": "inference-data"}
    message = _error(raw)
    assert "payload.train_key: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("status", "fields", "reason"),
    [
        ("SUCCESS", {}, "run_id is required when status is SUCCESS"),
        ("FAILED", {}, "error is required when status is FAILED"),
        ("DONE", {}, "payload.status: Input should be 'RUNNING', 'SUCCESS' or 'FAILED'"),
        ("RUNNING", {"train_seconds": -1}, "train_seconds: Input should be greater than"),
    ],
)
def test_model_training_rules(status: str, fields: dict[str, Any], reason: str) -> None:
    raw = _good()
    raw["payload"] = {"status": status, "model_type": "GRU", **fields}
    assert reason in _error(raw)


def test_scores_must_be_finite() -> None:
    with pytest.raises(ValidationError, match="finite number"):
        ModelSelected(
            run_id="r",
            model_type="GRU",
            scores={"nrmse": float("nan")},
            promoted_at=datetime.now(UTC),
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("digest", "md5:abc"),
        ("size_bytes", -1),
        ("train_key", "/etc/passwd"),
        ("train_key", "raw/../../secrets"),
        ("train_key", "s3://bucket/raw.csv"),
        ("train_key", "raw//train.csv"),
        ("test_key", ""),
    ],
)
def test_dataset_uploaded_field_rules(field: str, value: object) -> None:
    raw = json.loads(encode(new_event(_uploaded())))
    raw["payload"][field] = value
    assert _error(raw).startswith(f"payload.{field}:")


# ---------------------------------------------------------------------------- identifier


@pytest.mark.parametrize("identifier", ["global", "ElBorn", "station_01", "a.b-c", "x" * 64])
def test_identifier_accepts_safe_names(identifier: str) -> None:
    event = new_event(_uploaded(), identifier=identifier)
    assert decode(encode(event)).identifier == identifier


@pytest.mark.parametrize(
    "identifier",
    ["", ".", "..", "../etc", "a/b", "a b", "-rf", "_hidden", "x" * 65, "Poble Sec", "estació"],
)
def test_identifier_rejects_unsafe_names(identifier: str) -> None:
    with pytest.raises(EventValidationError, match=r"^identifier: Value error, identifier"):
        new_event(_uploaded(), identifier=identifier)
    raw = _good() | {"identifier": identifier}
    assert _error(raw).startswith("identifier: Value error")


def test_match_gives_typed_payloads() -> None:
    """Consumers narrow with ``match``; mypy then knows the payload's fields."""
    event: Event = decode(encode(new_event(_training())))
    match event:
        case TrainingDataEvent(payload=payload):
            assert payload.scaler_key.endswith("scaler.json")
        case _:
            pytest.fail(f"decoded as {type(event).__name__}")
