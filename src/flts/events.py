"""Versioned event envelopes: the only thing that travels on the bus.

Every message is a small JSON *claim check*: an :class:`Envelope` whose typed payload points at
objects in the store (parquet splits, scaler, feature spec) and never carries the data itself,
so any backend (SQLite rows, Kafka records) moves it cheaply and a message stays readable in a
dead-letter listing.

One event type per topic, and the type name *is* the topic name (``training-data`` travels on
``training-data``); failures go to ``dlq.<topic>`` (:func:`dlq_topic`).

Compatibility: ``schema_version`` is bumped only on a breaking change. A consumer rejects
versions newer than :data:`SCHEMA_VERSION` with a precise error (so the message is
dead-lettered, not misread) and a producer always writes the current one. Payloads forbid
unknown fields: a typo in a producer fails loudly at the producer, not silently downstream.

``decode`` turns every problem into one :class:`~flts.exceptions.EventValidationError` line
(``payload.train_key: Field required``) that lands in the dead-letter provenance as is.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from flts.exceptions import DataValidationError, EventValidationError

SCHEMA_VERSION = 1
"""The envelope version this code writes and the newest it can read."""

MAX_EVENT_BYTES = 1 << 20
"""Claim checks are small; anything bigger is data that belongs in the object store."""

DLQ_PREFIX = "dlq."
_TOPIC_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (``training-data`` -> ``dlq.training-data``)."""
    return f"{DLQ_PREFIX}{validate_topic(topic)}"


def validate_topic(topic: str) -> str:
    """Return ``topic`` if it is a legal name; Kafka's charset, so every backend accepts it."""
    if not _TOPIC_RE.fullmatch(topic):
        raise EventValidationError(
            f"invalid topic name {topic!r}: use 1-200 characters from [A-Za-z0-9._-], "
            "starting with a letter or digit"
        )
    return topic


# ----------------------------------------------------------------------------- field types

_IDENTIFIER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_identifier(value: str) -> str:
    # The identifier becomes a path segment of object keys and a bus key: a conservative
    # charset (and a leading letter/digit, which rules out "." and "..") keeps it from ever
    # escaping a prefix or being read as a CLI flag.
    if not _IDENTIFIER_RE.fullmatch(value):
        raise ValueError(
            f"identifier {value!r} must be 1-64 characters from [A-Za-z0-9_.-] "
            "starting with a letter or digit"
        )
    return value


def check_identifier(value: str, *, prefix: str = "") -> str:
    """``value`` if it follows the identifier rule, else a one-line
    :class:`~flts.exceptions.DataValidationError` (``prefix`` names the field): the check of
    an identifier taken from a URL or a form, outside any event."""
    try:
        return _check_identifier(value)
    except ValueError as exc:
        raise DataValidationError(f"{prefix}{exc}") from None


def is_identifier(value: str) -> bool:
    """Whether ``value`` follows the identifier rule (a name anything could be filed under)."""
    return _IDENTIFIER_RE.fullmatch(value) is not None


def _check_key(value: str) -> str:
    # Keys are relative to the configured store, never URLs or absolute paths, so the same
    # event stays valid whether the store is a local folder or an S3 bucket.
    problem = None
    if not value or len(value) > 1024:
        problem = "must be 1-1024 characters"
    elif value.startswith("/") or "\\" in value or "://" in value:
        problem = "must be a relative key ('a/b/c'), not a path or URL"
    elif any(part in ("", ".", "..") for part in value.rstrip("/").split("/")):
        problem = "must not contain empty, '.' or '..' segments"
    if problem:
        raise ValueError(f"object key {value!r} {problem}")
    return value


#: The identifier rule as a JSON schema, so an OpenAPI document states it exactly (a request
#: the schema allows is one the check accepts; the check's own message stays the one answered).
IDENTIFIER_SCHEMA = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "minLength": 1,
    "maxLength": 64,
    "examples": ["global"],
}

Identifier = Annotated[
    str, AfterValidator(_check_identifier), WithJsonSchema(dict(IDENTIFIER_SCHEMA))
]
"""Station or tenant name, safe as an object-key segment; ``"global"`` when none."""

ObjectKey = Annotated[str, AfterValidator(_check_key)]
"""A key relative to the object store's root (``processed/<hash>/train.parquet``)."""

Digest = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]
"""A content digest as :func:`flts.data.hashing.content_digest` writes it."""

ConfigHash = Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")]
"""Hex hash of everything that shapes the processed data (:func:`flts.data.hashing.config_hash`)."""

_Text = Annotated[str, Field(min_length=1, max_length=256)]


# ----------------------------------------------------------------------------- payloads


class Payload(BaseModel):
    """Base of every payload: immutable, and unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetUploaded(Payload):
    """The gateway stored an uploaded dataset; preprocessing may start."""

    dataset_id: _Text
    """Gateway-assigned id of the upload (one upload, one id; retries reuse it)."""
    filename: _Text
    """The name the user uploaded, for humans only (never used to build keys)."""
    train_key: ObjectKey
    """Raw training CSV in the store."""
    test_key: ObjectKey | None = None
    """Raw held-out test CSV, when the user supplied one."""
    size_bytes: int = Field(ge=0)
    """Size of the training CSV, so consumers can refuse absurd inputs before reading."""
    digest: Digest
    """``sha256:<hex>`` of the training CSV; feeds the config hash."""
    horizon: int | None = Field(default=None, ge=1, le=1_000)
    """Steps ahead this dataset's models forecast (``None``: the deployment's feature spec)."""
    lags: int | None = Field(default=None, ge=1, le=10_000)
    """Input rows per window for this dataset (``None``: the deployment's feature spec)."""
    group: Identifier | None = None
    """The bulk upload this station's dataset came in (:mod:`flts.fleet.groups`): stations
    of one group are trained together by the global model type; ``None`` for a single upload."""


ObservationCell = float | int | str | None
"""One cell of an observed row: a number, its text as in a CSV, or missing."""

MAX_OBSERVATION_ROWS = 1_000
"""Rows one ``observations`` event may carry (a station reports one every few minutes)."""


class Observations(Payload):
    """Rows a station reported, for the observation log (``flts worker observations``).

    The one payload that carries data instead of a claim check: the rows *are* the event, a
    few per message, far below :data:`MAX_EVENT_BYTES`. The envelope's ``identifier`` names
    the station; cells follow the data contract of an upload (time column and every input).
    """

    rows: list[dict[Annotated[str, Field(min_length=1, max_length=128)], ObservationCell]] = Field(
        min_length=1, max_length=MAX_OBSERVATION_ROWS
    )


class ObservationsStored(Payload):
    """New observation rows of the envelope's identifier are in the observation log (a claim
    check: the rows are read from the log). Announced best effort after the rows are stored:
    a lost announcement only skips one pushed forecast, the next row announces the newest."""

    accepted: int = Field(ge=1)
    """Rows that were new."""
    first: _Text
    """ISO time of the request's oldest row (late rows make it older than ``newest``)."""
    newest: _Text
    """ISO time of the station's newest stored row after the append."""


class ForecastPublished(Payload):
    """A forecast the ``forecaster`` worker made from a station's newest stored rows, as the
    inference API answers it (``forecast`` records; ``intervals`` per level when the model has
    them). Like ``observations``, a small event that carries its data."""

    run_id: _Text
    model_type: _Text
    config_hash: _Text
    forecast: list[dict[str, float | str]] = Field(min_length=1, max_length=1_000)
    intervals: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)


class _Processed(Payload):
    """Artefacts of one preprocessing run that both training and inference need."""

    config_hash: ConfigHash
    """Hash of the preprocessing inputs; names ``processed_prefix``."""
    processed_prefix: ObjectKey
    """Folder holding every artefact below (``processed/<identifier>/<config_hash>/``)."""
    test_key: ObjectKey
    """Held-out test split (parquet), in original units."""
    scaler_key: ObjectKey
    """Scaler fitted on the training split only, as JSON (never a pickle)."""
    feature_spec_key: ObjectKey
    """Ordered inputs, targets, lags and horizon, enforced at inference."""
    meta_key: ObjectKey
    """Run metadata: canonical config JSON, row counts, time ranges."""


class InferenceData(_Processed):
    """What an inference replica needs from one preprocessing run: the fitted scaler and the
    feature spec to transform requests identically, and the held-out rows for warm-up."""


class TrainingData(_Processed):
    """Processed splits ready for training: the :class:`InferenceData` fields plus the
    training and validation splits. (Siblings, not subclasses, so one can never be passed
    where the other is expected.)"""

    train_key: ObjectKey
    """Training split (parquet); the scaler was fitted on it alone."""
    validation_key: ObjectKey
    """Chronological validation split (parquet) for early stopping."""
    group: Identifier | None = None
    """The upload's :attr:`DatasetUploaded.group`, carried to the trainers."""


class TrainingStatus(StrEnum):
    """Life cycle of one training job, as reported on ``model-training``."""

    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class ModelTraining(Payload):
    """A trainer reports progress of one model type on one set of processed data."""

    status: TrainingStatus
    model_type: _Text
    """Model type name as the model registry knows it (``LSTM``, ``RIDGE``...)."""
    run_id: _Text | None = None
    """Tracking run id; required on SUCCESS so the evaluator can load the model."""
    error: Annotated[str, Field(max_length=4000)] | None = None
    """One-line reason; required on FAILED so the evaluator need not wait for this model."""
    train_seconds: float | None = Field(default=None, ge=0)
    """Wall time of the fit, for the benchmark report."""

    @model_validator(mode="after")
    def _status_fields(self) -> ModelTraining:
        if self.status is TrainingStatus.SUCCESS and not self.run_id:
            raise ValueError("run_id is required when status is SUCCESS")
        if self.status is TrainingStatus.FAILED and not self.error:
            raise ValueError("error is required when status is FAILED")
        return self


class ModelSelected(Payload):
    """The evaluator promoted a model; every inference replica must load it."""

    run_id: _Text
    """Tracking run of the promoted model."""
    model_type: _Text
    previous_run_id: _Text | None = None
    """The champion it replaces (``None`` for the first promotion); enables rollback."""
    scores: dict[str, Annotated[float, Field(allow_inf_nan=False)]]
    """Metric name -> value on the held-out test set in original units (``nrmse``, ...)."""
    promoted_at: AwareDatetime
    """When the promotion pointer was written (UTC)."""

    @field_validator("promoted_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)


class RetrainReason(StrEnum):
    """Why a retraining was asked for (``retrain-requested``)."""

    DRIFT = "drift"
    """The monitor's drift detector saw live error rise above the evaluation error."""
    SCHEDULE = "schedule"
    """The retraining schedule came due (every N hours or M new observation rows)."""
    MANUAL = "manual"
    """An operator asked (``flts retrain``)."""


EvidenceValue = Annotated[float, Field(allow_inf_nan=False)] | int | str | None
"""One figure behind a retraining request (a statistic, an error, a row count, a note)."""


class RetrainRequested(Payload):
    """Retrain the identifier (the envelope's) on its stored observations: preprocess builds a
    training set from them and the pipeline runs as for an upload (docs/architecture.md,
    rule 18)."""

    reason: RetrainReason
    evidence: dict[Annotated[str, Field(min_length=1, max_length=64)], EvidenceValue] = Field(
        default_factory=dict, max_length=64
    )
    """What made the trigger fire: detector statistic, live and evaluation error, rows..."""
    champion_run_id: _Text | None = None
    """The champion when the request was made (``None``: none yet)."""
    note: Annotated[str, Field(max_length=1000)] | None = None
    """Free text from the operator (``flts retrain --reason``)."""


# ----------------------------------------------------------------------------- envelopes


EVENT_CLASSES: dict[str, type[Envelope]] = {}
"""Event type (= topic) -> envelope class: the one table of event types. A class joins it by
naming its topic (``class XEvent(Envelope, topic="x")``); ``decode``, ``new_event`` and
:data:`TOPICS` all read it."""

_BY_PAYLOAD: dict[type[Payload], type[Envelope]] = {}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


class Envelope(BaseModel):
    """Fields every event carries; concrete events below fix the topic and the payload.

    Use the subclasses (or :func:`new_event`); a bare ``Envelope`` is never published.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: ClassVar[str] = ""
    """The event type, equal to the topic it travels on (set by the class keyword)."""

    schema_version: int = Field(default=SCHEMA_VERSION, ge=1, le=SCHEMA_VERSION)
    """Envelope version; newer than :data:`SCHEMA_VERSION` is rejected by ``decode``."""
    event_id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    """Unique per event and kept on redelivery: the idempotency key consumers dedupe on."""
    type: str = ""
    """Event type, equal to the topic it travels on (filled in from the class)."""
    occurred_at: AwareDatetime = Field(default_factory=_utcnow)
    """When the producer created the event, in UTC."""
    correlation_id: str = Field(default_factory=_new_id, min_length=1, max_length=128)
    """One per pipeline run (minted at upload), carried by every event that follows."""
    identifier: Identifier = "global"
    """Station or tenant the run is for; also the bus key, so per-station order holds."""
    config_hash: ConfigHash | None = None
    """Hash of the preprocessing inputs the event derives from, when there is one."""
    payload: Payload

    def __init_subclass__(cls, topic: str | None = None, **kwargs: Any) -> None:
        # ``topic`` is consumed by __pydantic_init_subclass__ once the fields are built.
        super().__init_subclass__(**kwargs)

    @classmethod
    def __pydantic_init_subclass__(cls, topic: str | None = None, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if topic is None:
            return
        payload = cls.model_fields["payload"].annotation
        if topic in EVENT_CLASSES or not isinstance(payload, type):
            raise TypeError(f"event type {topic!r} is registered twice or has no payload class")
        cls.topic = validate_topic(topic)
        EVENT_CLASSES[topic] = cls
        _BY_PAYLOAD[payload] = cls

    @model_validator(mode="before")
    @classmethod
    def _type_is_topic(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.topic:
            kind = data.get("type", cls.topic)
            if kind != cls.topic:
                raise ValueError(f"type must be {cls.topic!r}, got {kind!r}")
            data = {**data, "type": cls.topic}
        return data

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent_hash(self) -> Envelope:
        # Processed-data payloads carry their own config hash; two different hashes on one
        # event would make lineage ambiguous.
        inner = getattr(self.payload, "config_hash", None)
        if inner is not None and self.config_hash is not None and inner != self.config_hash:
            raise ValueError(
                f"config_hash {self.config_hash!r} differs from payload.config_hash {inner!r}"
            )
        return self


class DatasetUploadedEvent(Envelope, topic="dataset-uploaded"):
    payload: DatasetUploaded


class TrainingDataEvent(Envelope, topic="training-data"):
    payload: TrainingData


class InferenceDataEvent(Envelope, topic="inference-data"):
    payload: InferenceData


class ModelTrainingEvent(Envelope, topic="model-training"):
    payload: ModelTraining


class ModelSelectedEvent(Envelope, topic="model-selected"):
    payload: ModelSelected


class ObservationsEvent(Envelope, topic="observations"):
    payload: Observations


class ObservationsStoredEvent(Envelope, topic="observations-stored"):
    payload: ObservationsStored


class ForecastPublishedEvent(Envelope, topic="forecasts"):
    payload: ForecastPublished


class RetrainRequestedEvent(Envelope, topic="retrain-requested"):
    payload: RetrainRequested


Event = (
    DatasetUploadedEvent
    | TrainingDataEvent
    | InferenceDataEvent
    | ModelTrainingEvent
    | ModelSelectedEvent
    | ObservationsEvent
    | ObservationsStoredEvent
    | ForecastPublishedEvent
    | RetrainRequestedEvent
)
"""Any concrete event, for type checkers; ``match`` on the class to get a typed payload."""

TOPICS: tuple[str, ...] = tuple(EVENT_CLASSES)
DATASET_UPLOADED = DatasetUploadedEvent.topic
TRAINING_DATA = TrainingDataEvent.topic
INFERENCE_DATA = InferenceDataEvent.topic
MODEL_TRAINING = ModelTrainingEvent.topic
MODEL_SELECTED = ModelSelectedEvent.topic
OBSERVATIONS = ObservationsEvent.topic
OBSERVATIONS_STORED = ObservationsStoredEvent.topic
FORECASTS = ForecastPublishedEvent.topic
RETRAIN_REQUESTED = RetrainRequestedEvent.topic


def new_event(
    payload: Payload,
    *,
    parent: Envelope | None = None,
    correlation_id: str | None = None,
    identifier: str | None = None,
    config_hash: str | None = None,
    event_id: str | None = None,
) -> Event:
    """Build the event for ``payload`` with a fresh ``event_id``.

    ``parent`` is the event being handled: the new event inherits its ``correlation_id``,
    ``identifier`` and ``config_hash`` so one run stays traceable end to end; explicit
    arguments win. ``config_hash`` defaults to the payload's own when it has one.
    ``event_id`` is for producers that must publish the same event again after a crash
    (a deterministic id, which consumers then drop as a duplicate).
    """
    cls = _BY_PAYLOAD.get(type(payload))
    if cls is None:
        raise TypeError(f"no event type carries a {type(payload).__name__} payload")
    fields: dict[str, Any] = {"payload": payload}
    if event_id is not None:
        fields["event_id"] = event_id
    if parent is not None:
        fields.update(
            correlation_id=parent.correlation_id,
            identifier=parent.identifier,
            config_hash=parent.config_hash,
        )
    if correlation_id is not None:
        fields["correlation_id"] = correlation_id
    if identifier is not None:
        fields["identifier"] = identifier
    own_hash = getattr(payload, "config_hash", None)
    if config_hash is not None:
        fields["config_hash"] = config_hash
    elif own_hash is not None:
        fields["config_hash"] = own_hash
    try:
        event: Event = cls.model_validate(fields)  # type: ignore[assignment]
    except ValidationError as exc:
        raise EventValidationError(*_problems(exc)) from exc
    return event


# ----------------------------------------------------------------------------- wire format


def encode(envelope: Envelope) -> bytes:
    """Compact UTF-8 JSON of ``envelope``; refuses anything over :data:`MAX_EVENT_BYTES`."""
    if type(envelope) not in _BY_PAYLOAD.values():
        raise EventValidationError(
            f"cannot encode a bare {type(envelope).__name__}; use a concrete event class"
        )
    data = envelope.model_dump_json().encode()
    if len(data) > MAX_EVENT_BYTES:
        raise EventValidationError(
            f"event is {len(data)} bytes, over the {MAX_EVENT_BYTES}-byte limit: put the data "
            "in the object store and send its key"
        )
    return data


def decode(data: bytes) -> Event:
    """Parse and validate bytes from the bus.

    Raises :class:`~flts.exceptions.EventValidationError` with one line naming the problem:
    malformed JSON, unknown type, unsupported ``schema_version``, or each invalid field.
    """
    if len(data) > MAX_EVENT_BYTES:
        raise EventValidationError(f"event is {len(data)} bytes, over the limit")
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventValidationError(f"malformed JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[..." deeper than the parser's recursion limit
        raise EventValidationError("malformed JSON: nested too deeply") from exc
    if not isinstance(raw, dict):
        raise EventValidationError(f"event must be a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise EventValidationError(f"schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise EventValidationError(
            f"schema_version {version} is newer than supported {SCHEMA_VERSION}; upgrade flts"
        )
    kind = raw.get("type")
    cls = EVENT_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventValidationError(
            f"unknown event type {kind!r}; known: {', '.join(EVENT_CLASSES)}"
        )
    try:
        event: Event = cls.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        raise EventValidationError(*_problems(exc)) from exc
    return event


def _problems(exc: ValidationError) -> list[str]:
    """One ``location: reason`` line per pydantic error."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "event"
        lines.append(f"{where}: {error['msg']}")
    return lines
