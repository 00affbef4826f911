"""``flts gc`` on the real backends (file store and the S3 server, the SQLite bus, a model
cache on disk): what the retention rules delete goes, and what a champion or its promotion
history needs survives, however old."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.bus_suite import training_event
from flts import retention
from flts.bus import open_bus
from flts.cli import app
from flts.data.processed import ProcessedKeys
from flts.events import Event
from flts.exceptions import DataValidationError
from flts.models.base import MANIFEST
from flts.promotion import Promotion, PromotionStore, mark_pending
from flts.settings import Settings
from flts.storage import ObjectStore
from servers.s3 import SeaweedFS

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=400)  # older than every default retention period
YOUNG = NOW - timedelta(hours=1)
MODELS = "model-training"  # a second topic, for a group that has not consumed everything


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, object]]:
    if request.param == "file":
        return (tmp_path / "store").resolve().as_uri(), {}
    seaweedfs: SeaweedFS = request.getfixturevalue("s3_server")
    return f"s3://{seaweedfs.create_bucket()}/gc-{uuid.uuid4().hex[:8]}", dict(
        seaweedfs.credentials.storage_options()
    )


@pytest.fixture
def settings(tmp_path: Path, store_url: tuple[str, dict[str, object]]) -> Settings:
    url, options = store_url
    storage = {"url": url}
    for name, option in (("s3_endpoint_url", "endpoint_url"), ("s3_access_key_id", "key")):
        if option in options:
            storage[name] = str(options[option])
    if "secret" in options:
        storage["s3_secret_access_key"] = str(options["secret"])
    return Settings(
        home=tmp_path / "home",
        bus_url=f"sqlite:///{tmp_path / 'bus.db'}",
        storage=storage,
        retention={"model_cache_keep": 1},
    )


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return ObjectStore(settings.storage.url, **settings.storage.options())


def processed(store: ObjectStore, config_hash: str, digest: str, created: datetime) -> None:
    keys = ProcessedKeys.for_hash(config_hash)
    store.put(keys.train_key, b"parquet")
    store.put(keys.test_key, b"parquet")
    meta = {"created_at": created.isoformat(), "input_digests": {"train": digest, "test": "x"}}
    store.put_json(keys.meta_key, meta)


def dataset(store: ObjectStore, dataset_id: str, digest: str, uploaded: datetime) -> None:
    store.put(f"datasets/{dataset_id}/train.csv", b"time,down\n")
    store.put_json(
        f"datasets/{dataset_id}/meta.json",
        {"uploaded_at": uploaded.isoformat(), "train": {"digest": digest}, "test": None},
    )


def inference_log(store: ObjectStore, identifier: str, when: datetime, run_id: str) -> str:
    key = f"inference-logs/{identifier}/{when:%Y-%m-%d}/{when:%Y%m%dT%H%M%S%fZ}-{run_id}.json"
    store.put_json(key, {"run_id": run_id})
    return key


def cached_model(settings: Settings, run_id: str, age_days: float) -> Path:
    directory = retention.model_cache_dir(settings) / run_id
    directory.mkdir(parents=True)
    (directory / MANIFEST).write_text("{}")
    stamp = (NOW - timedelta(days=age_days)).timestamp()
    os.utime(directory, (stamp, stamp))
    return directory


@pytest.fixture
def populated(settings: Settings, store: ObjectStore) -> dict[str, Path]:
    """Champion ``run-b`` on config ``hb``, promoted over ``run-a`` on ``ha`` (both in the
    history, everything of theirs 400 days old); config ``hp`` awaits its evaluation; ``hc``
    and ``hx`` were never promoted (one old, one young)."""
    for name in ("a", "b", "c", "x", "p"):
        processed(store, f"h{name}", f"sha256:{name}", YOUNG if name == "x" else OLD)
    dataset(store, "ds-a", "sha256:a", OLD)
    dataset(store, "ds-b", "sha256:b", OLD)
    dataset(store, "ds-p", "sha256:p", OLD)
    dataset(store, "ds-c", "sha256:c", OLD)
    dataset(store, "ds-young", "sha256:other", YOUNG)
    store.put("datasets/ds-partial/train.csv", b"no meta yet")  # an upload in progress
    promotions = PromotionStore(store)
    promotions.record(
        Promotion(
            run_id="run-a", model_type="RIDGE", config_hash="ha", identifier="S1", promoted_at=OLD
        )
    )
    promotions.record(
        Promotion(
            run_id="run-b",
            model_type="LSTM",
            config_hash="hb",
            identifier="S1",
            promoted_at=OLD + timedelta(days=1),
        )
    )
    mark_pending(store, "S1", "hp", OLD)
    for days in (0, 1):
        inference_log(store, "S1", OLD + timedelta(days=days), "run-a")
    inference_log(store, "S1", YOUNG, "run-b")
    inference_log(store, "S2", OLD, "run-z")  # the only log of S2: its live error
    return {
        run: cached_model(settings, run, age)
        for run, age in (("run-a", 50), ("run-b", 60), ("run-c", 1), ("run-d", 2), ("run-e", 3))
    }


ROOTS = ("datasets", "processed", "inference-logs", "model-promotion", "evaluations-pending")


def present(store: ObjectStore, prefix: str) -> list[str]:
    """Keys under ``prefix``; ``""``: under every root gc looks at or must not touch."""
    if not prefix:
        return [key for root in ROOTS for key in store.list(root)]
    return list(store.list(prefix))


def test_gc_deletes_what_no_champion_needs_and_keeps_the_rest(
    settings: Settings, store: ObjectStore, populated: dict[str, Path]
) -> None:
    dry = retention.plan(settings, store, kinds=["datasets", "processed", "logs", "model-cache"])
    would = {(i.kind, i.target) for i in dry.deletions}
    before = present(store, "")
    assert would == {
        ("datasets", "datasets/ds-c/"),
        ("processed", "processed/hc/"),
        ("logs", f"inference-logs/S1/{OLD:%Y-%m-%d}/"),
        ("logs", f"inference-logs/S1/{OLD + timedelta(days=1):%Y-%m-%d}/"),
        ("model-cache", str(populated["run-d"])),
        ("model-cache", str(populated["run-e"])),
    }
    assert present(store, "") == before  # planning deletes nothing

    deleted = retention.apply(settings, store, dry)
    assert {(i.kind, i.target) for i in deleted} == would
    # The champion's and its history's configs, their uploads, the pending evaluation's.
    for config_hash in ("ha", "hb", "hp", "hx"):
        assert store.exists(ProcessedKeys.for_hash(config_hash).meta_key), config_hash
        assert store.exists(ProcessedKeys.for_hash(config_hash).test_key), config_hash
    assert present(store, "processed/hc") == []
    for dataset_id in ("ds-a", "ds-b", "ds-p", "ds-young"):
        assert store.exists(f"datasets/{dataset_id}/train.csv"), dataset_id
    assert present(store, "datasets/ds-c") == []
    assert store.exists("datasets/ds-partial/train.csv")
    # Promotion records are never gc's to delete; rollback still finds run-a.
    promotions = PromotionStore(store)
    assert [p.run_id for p in promotions.history("S1")] == ["run-a", "run-b"]
    assert promotions.rollback("S1").run_id == "run-a"
    # Logs: the newest of each identifier stays, however old.
    (kept_log,) = present(store, "inference-logs/S1")
    assert kept_log.endswith("-run-b.json")
    assert len(present(store, "inference-logs/S2")) == 1
    # Cache: the champion, the run it replaced and the newest other one.
    assert sorted(p.name for p in populated.values() if p.exists()) == ["run-a", "run-b", "run-c"]

    again = retention.plan(settings, store, kinds=["datasets", "processed", "logs"])
    assert again.deletions == []


def test_something_promoted_after_the_plan_is_not_deleted(
    settings: Settings, store: ObjectStore, populated: dict[str, Path]
) -> None:
    planned = retention.plan(settings, store, kinds=["processed", "datasets"])
    assert {i.target for i in planned.deletions} == {"processed/hc/", "datasets/ds-c/"}
    PromotionStore(store).record(
        Promotion(run_id="run-c", model_type="GRU", config_hash="hc", identifier="S1")
    )
    assert retention.apply(settings, store, planned) == []
    assert store.exists(ProcessedKeys.for_hash("hc").meta_key)
    assert store.exists("datasets/ds-c/meta.json")


def test_an_unreadable_promotion_record_stops_gc(
    settings: Settings, store: ObjectStore, populated: dict[str, Path]
) -> None:
    store.put("model-promotion/S1/history/20990101T000000000000Z-broken.json", b'{"run_id": ')
    with pytest.raises(Exception, match="nothing was deleted"):
        retention.plan(settings, store)
    assert store.exists(ProcessedKeys.for_hash("hc").meta_key)


def _consume(bus_url: str, topic: str, group: str, handler: Callable[[Event], None]) -> None:
    bus = open_bus(bus_url)
    try:
        bus.consume(topic, group, handler, max_idle=0.3)
    finally:
        bus.close()


def _reject_third(event: Event) -> None:
    if event.payload.model_type == "m3":  # type: ignore[union-attr]
        raise DataValidationError("bad payload")  # dead-lettered at once


@pytest.mark.parametrize("store_url", ["file"], indirect=True)
def test_bus_rows_go_once_every_group_consumed_them(settings: Settings, store: ObjectStore) -> None:
    url = settings.bus.url
    bus = open_bus(url)
    try:
        for n in range(5):
            bus.publish("training-data", training_event(n))
        for n in range(3):
            bus.publish(MODELS, training_event(10 + n))
    finally:
        bus.close()
    _consume(url, "training-data", "trainers", _reject_third)
    _consume(url, MODELS, "evaluator", lambda e: None)
    bus = open_bus(url)
    try:
        for n in range(2):  # published after the evaluator's last poll: not consumed yet
            bus.publish(MODELS, training_event(20 + n))
        bus.publish("inference-data", training_event(30))  # no group reads it yet
    finally:
        bus.close()

    fresh = retention.plan(settings, store, kinds=["bus"])
    assert fresh.deletions == []  # nothing is older than bus_days yet

    later = NOW + timedelta(days=settings.retention.bus_days + 1)
    planned = retention.plan(settings, store, kinds=["bus"], now=later)
    assert {(i.target, i.count) for i in planned.deletions} == {("training-data", 5), (MODELS, 3)}
    assert {(i.target, i.count) for i in planned.items if i.action == "keep"} == {(MODELS, 2)}
    deleted = retention.apply(settings, store, planned, now=later)
    assert sum(i.count for i in deleted) == 8

    bus = open_bus(url)
    try:
        assert bus.pending("evaluator", MODELS) == 2  # the unconsumed ones are still there
        assert len(bus.dead_letters("training-data")) == 1  # dead letters kept by default
        assert bus.pending("nobody-yet", "inference-data") == 1  # no group reads it: kept
        remaining: list[Event] = []
        bus.consume(MODELS, "evaluator", remaining.append, max_idle=0.3)
        assert sorted(e.payload.model_type for e in remaining) == ["m20", "m21"]  # type: ignore[union-attr]
    finally:
        bus.close()

    with_dlq = settings.model_copy(
        update={"retention": settings.retention.model_copy(update={"dead_letters": True})}
    )
    planned = retention.plan(with_dlq, store, kinds=["bus"], now=later)
    # The dead letter now too, and the two messages the evaluator has consumed since.
    assert {(i.target, i.count) for i in planned.deletions} == {
        ("dlq.training-data", 1),
        (MODELS, 2),
    }


@pytest.mark.parametrize("store_url", ["file"], indirect=True)
def test_cli_dry_run_lists_and_deletes_nothing_then_gc_deletes(
    settings: Settings, store: ObjectStore, populated: dict[str, Path], tmp_path: Path
) -> None:
    env = {
        "FLTS_HOME": str(settings.home),
        "FLTS_BUS_URL": settings.bus.url,
        "FLTS_STORAGE_URL": settings.storage.url,
        "FLTS_RETENTION__MODEL_CACHE_KEEP": "1",
    }
    runner = CliRunner()
    before = present(store, "")
    dry = runner.invoke(app, ["gc", "--dry-run", "-o", "json"], env=env)
    assert dry.exit_code == 0, dry.output
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True
    targets = {d["target"] for d in document["would_delete"]}
    assert {"datasets/ds-c/", "processed/hc/", str(populated["run-e"])} <= targets
    assert "processed/hb/" in {k["target"] for k in document["kept"]}
    assert present(store, "") == before
    assert populated["run-e"].exists()

    table = runner.invoke(app, ["gc"], env=env)
    assert table.exit_code == 0, table.output
    assert "deleted" in table.output
    assert "processed/hc/" in table.output
    assert not store.exists(ProcessedKeys.for_hash("hc").meta_key)
    assert store.exists(ProcessedKeys.for_hash("hb").meta_key)
    assert not populated["run-e"].exists()
    assert populated["run-b"].exists()

    wrong = runner.invoke(app, ["gc", "--only", "everything"], env=env)
    assert wrong.exit_code == 2  # a usage error, naming the kinds there are
    assert "model-cache" in wrong.output
