"""Preprocess service: raw CSVs of an upload -> ``processed/<config_hash>/`` -> claim checks.

A ``retrain-requested`` event is handled as the upload of a retraining set built from the
identifier's stored observations (:mod:`flts.live.retrain`, docs/architecture.md, rule 18).

On ``dataset-uploaded`` it reads the stored CSV bytes, validates them with the core's checks,
hashes everything that shapes the processed data (recipe, feature spec with the upload's own
horizon and lags, the *content* digests of the stored bytes, seed 0; docs/architecture.md,
rule 4), writes the splits once per hash and publishes
one ``training-data`` and one ``inference-data`` event, both children of the upload event (same
correlation id and identifier) carrying the config hash.

Same hash again (a re-upload of identical bytes, or a redelivery): the processed directory is
reused, not recomputed, and the two events are published again so downstream services (which
are idempotent themselves) can pick the run up.

No test file: the upload's training CSV is split chronologically and its last
:data:`HOLDOUT_FRACTION` of rows becomes the held-out test set, before the recipe's own
train/validation split runs on the rest. The rule is part of the config hash (input role
``"test"`` = :data:`HOLDOUT_RULE`), so changing it can never reuse stale data.

The table-level helpers (:func:`read_tables`, :func:`build_splits`) are shared with the
gateway, which runs them at upload time so a dataset it accepts is one this service can
process (the user gets a 422 instead of a dead letter).
"""

from __future__ import annotations

import io
import logging
import math
from typing import IO, ClassVar

from flts.data.hashing import config_hash, content_digest
from flts.data.prepare import Splits, split
from flts.data.processed import ProcessedKeys, is_processed, write_processed
from flts.data.reader import TrafficTable, read_traffic_csv
from flts.data.spec import FeatureSpec, Recipe
from flts.events import (
    DATASET_UPLOADED,
    INFERENCE_DATA,
    RETRAIN_REQUESTED,
    TRAINING_DATA,
    DatasetUploadedEvent,
    Envelope,
    Event,
    InferenceData,
    RetrainRequestedEvent,
    TrainingData,
    new_event,
)
from flts.exceptions import DataValidationError
from flts.services.context import ServiceContext

log = logging.getLogger(__name__)

#: Sampling seed of the config hash: preprocessing is deterministic, the seed is recorded so a
#: future sampled recipe changes the hash instead of silently reusing data.
SEED = 0
#: Share of the training CSV's rows (its chronological end) held out as the test set when an
#: upload brings no test file.
HOLDOUT_FRACTION = 0.2
#: How the "test" input is described in the config hash when it is carved from the training CSV.
HOLDOUT_RULE = f"holdout:last-{HOLDOUT_FRACTION:g}-of-train"


def read_tables(
    train: bytes | IO[bytes], test: bytes | IO[bytes] | None, spec: FeatureSpec
) -> tuple[TrafficTable, TrafficTable | None]:
    """Parse and validate both CSVs (bytes, or seekable binary files read from their start);
    every problem of both files in one error, each line prefixed with the file's role
    (``train: missing input columns ['up']``)."""
    problems: list[str] = []
    tables: dict[str, TrafficTable] = {}
    for role, data in (("train", train), ("test", test)):
        if data is None:
            continue
        if isinstance(data, bytes):
            data = io.BytesIO(data)
        data.seek(0)
        try:
            tables[role] = read_traffic_csv(data, spec)
        except DataValidationError as exc:
            problems.extend(f"{role}: {problem}" for problem in exc.problems)
    if problems:
        raise DataValidationError(*problems)
    return tables["train"], tables.get("test")


def holdout(train: TrafficTable, spec: FeatureSpec) -> tuple[TrafficTable, TrafficTable]:
    """Split a training table chronologically into (train, test) by :data:`HOLDOUT_FRACTION`."""
    n = len(train)
    test_rows = math.floor(HOLDOUT_FRACTION * n)
    window = spec.lags + spec.horizon
    if test_rows < window:
        raise DataValidationError(
            f"train: {n} rows and no test file: the held-out last {HOLDOUT_FRACTION:.0%} "
            f"({test_rows} rows) is shorter than one window (lags {spec.lags} + horizon "
            f"{spec.horizon}); upload more rows or a separate test file"
        )
    cut = n - test_rows
    return (
        TrafficTable(frame=train.frame.iloc[:cut], frequency=train.frequency),
        TrafficTable(frame=train.frame.iloc[cut:], frequency=train.frequency),
    )


def build_splits(
    train: TrafficTable, test: TrafficTable | None, *, spec: FeatureSpec, recipe: Recipe
) -> Splits:
    """The recipe's splits, with the holdout rule applied when there is no test table."""
    if test is None:
        train, test = holdout(train, spec)
    try:
        return split(train, test, spec=spec, recipe=recipe)
    except DataValidationError as exc:
        raise DataValidationError(*(f"train: {p}" for p in exc.problems)) from exc


def input_digests(train: bytes, test: bytes | None) -> dict[str, str]:
    """Role -> content digest of the stored bytes; the holdout rule stands in for a missing
    test file (so "same train, no test" and "same train, explicit test" never collide)."""
    return {
        "train": content_digest(train),
        "test": HOLDOUT_RULE if test is None else content_digest(test),
    }


def processed_payloads(
    keys: ProcessedKeys, group: str | None = None
) -> tuple[TrainingData, InferenceData]:
    """The two claim checks for one processed directory (``group``: the bulk upload it came
    in, for the trainers)."""
    common = {
        "config_hash": keys.config_hash,
        "processed_prefix": keys.prefix,
        "test_key": keys.test_key,
        "scaler_key": keys.scaler_key,
        "feature_spec_key": keys.feature_spec_key,
        "meta_key": keys.meta_key,
    }
    training = TrainingData(
        **common, train_key=keys.train_key, validation_key=keys.validation_key, group=group
    )
    return training, InferenceData(**common)


class PreprocessService:
    """Consumes ``dataset-uploaded`` and ``retrain-requested``; publishes ``training-data``
    and ``inference-data``."""

    topics: ClassVar[tuple[str, ...]] = (DATASET_UPLOADED, RETRAIN_REQUESTED)
    group: str = "preprocess"

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.settings = context.settings

    def handle(self, event: Event) -> None:
        """Process one upload. Bad data raises :class:`DataValidationError` (the bus
        dead-letters it without retrying); a missing object raises ``KeyError`` (retried,
        since an object store may be briefly inconsistent)."""
        if isinstance(event, RetrainRequestedEvent):
            self.retrain(event)
            return
        if not isinstance(event, DatasetUploadedEvent):
            log.warning("preprocess ignores %s event %s", event.type, event.event_id)
            return
        self.publish(self.process(event), event)

    def retrain(self, event: RetrainRequestedEvent) -> None:
        """Build the retraining set of a request from the stored observations, process it
        like an upload and publish its claim checks (children of the request); a set that
        cannot be built is refused (:class:`DataValidationError`, dead-lettered) and the
        trigger's outcome records why (docs/architecture.md, rule 18)."""
        # Imported here: the live package builds on this module's holdout rule.
        from flts.live.retrain import retraining_dataset
        from flts.live.triggers import record_outcome

        store = self.context.store
        try:
            upload = retraining_dataset(store, self.settings, event)
            keys = self.process(upload)
        except DataValidationError as exc:
            record_outcome(store, event, status="refused", reason="; ".join(exc.problems))
            raise
        record_outcome(
            store,
            event,
            status="prepared",
            dataset_id=upload.payload.dataset_id,
            config_hash=keys.config_hash,
        )
        self.publish(keys, event)

    def publish(self, keys: ProcessedKeys, event: Envelope) -> None:
        """The two claim checks of ``keys``, children of ``event`` (an upload's group goes on
        to the trainers)."""
        group = event.payload.group if isinstance(event, DatasetUploadedEvent) else None
        training, inference = processed_payloads(keys, group)
        bus = self.context.bus
        bus.publish(TRAINING_DATA, new_event(training, parent=event))
        bus.publish(INFERENCE_DATA, new_event(inference, parent=event))
        log.info(
            "%s %s -> processed %s (correlation %s)",
            event.type,
            event.event_id,
            keys.config_hash,
            event.correlation_id,
            extra={
                "event": "preprocessed",
                "correlation_id": event.correlation_id,
                "config_hash": keys.config_hash,
                "identifier": event.identifier,
            },
        )

    def process(self, event: DatasetUploadedEvent) -> ProcessedKeys:
        """Write (or reuse) the processed directory of ``event``'s upload; return its keys."""
        payload = event.payload
        limit = self.settings.gateway.max_upload_bytes
        if payload.size_bytes > limit:
            raise DataValidationError(
                f"train: {payload.size_bytes} bytes is over the {limit}-byte upload limit"
            )
        store = self.context.store
        train = store.get(payload.train_key)
        if content_digest(train) != payload.digest:
            # The claim check and the object disagree: processing would hash other bytes than
            # the ones the event names, breaking lineage. No retry can fix that.
            raise DataValidationError(
                f"train: stored object {payload.train_key} does not match the event's digest"
            )
        test = None if payload.test_key is None else store.get(payload.test_key)
        digests = input_digests(train, test)
        spec = self.settings.feature_spec.for_task(horizon=payload.horizon, lags=payload.lags)
        recipe = self.settings.recipe
        hex_hash, canonical = config_hash(
            recipe=recipe, spec=spec, input_digests=digests, seed=SEED
        )
        if is_processed(store, hex_hash):
            log.info("config %s already processed: reusing it", hex_hash)
            return ProcessedKeys.for_hash(hex_hash)
        train_table, test_table = read_tables(train, test, spec)
        splits = build_splits(train_table, test_table, spec=spec, recipe=recipe)
        return write_processed(
            store, splits, config_hash=hex_hash, canonical_json=canonical, input_digests=digests
        )
