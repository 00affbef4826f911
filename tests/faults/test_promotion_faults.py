"""Promotion under faults, on the file store and on a real S3 server (SeaweedFS): a corrupt
champion artifact with a fresh replica starting, two evaluators on one decision, the
evaluator killed with SIGKILL while it waits, and a truncated history entry.

Each case prints its time to recover (``-s`` shows it); the figures are in docs/operations.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import helpers
from api.support import LiveServer
from flts.api import create_app
from flts.bus import Bus
from flts.events import MODEL_SELECTED, MODEL_TRAINING, Event, ModelTrainingEvent, TrainingStatus
from flts.promotion import Promotion, PromotionStore, promote_run, read_decision, rollback_champion
from flts.services.context import ServiceContext
from flts.services.evaluate import EvaluateService
from flts.services.metrics import worker_metrics
from flts.services.train import TrainService
from flts.settings import EvaluationSettings, ServingSettings, Settings
from servers.s3 import SeaweedFS

from .conftest import FAULTS_BUCKET

CHEAP = ("PERSISTENCE", "RIDGE", "SEASONAL_NAIVE")


@pytest.fixture(params=["file", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Settings fields of the object store under test (S3 only starts when asked for)."""
    if request.param == "file":
        return {"storage_url": (tmp_path / "store").as_uri()}
    seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
    credentials = seaweedfs.credentials
    return {
        "storage_url": f"s3://{FAULTS_BUCKET}/{uuid.uuid4().hex}",
        "s3_endpoint_url": credentials.endpoint_url,
        "s3_access_key_id": credentials.access_key_id,
        "s3_secret_access_key": credentials.secret_access_key,
        "s3_region": credentials.region,
    }


@pytest.fixture
def fields(tmp_path: Path, mlflow_template: Path, backend: dict[str, Any]) -> dict[str, Any]:
    """Settings shared by every process of one test: an SQLite bus and MLflow on disk."""
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return {
        "home": tmp_path / "home",
        "bus_url": f"sqlite:///{tmp_path / 'bus.db'}",
        "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        **backend,
    }


def make_settings(fields: dict[str, Any], **overrides: Any) -> Settings:
    return Settings(**{**fields, **overrides})


@pytest.fixture
def context(fields: dict[str, Any]) -> Iterator[ServiceContext]:
    context = ServiceContext(make_settings(fields))
    yield context
    context.close()


def events(bus: Bus, topic: str) -> list[Event]:
    seen: list[Event] = []
    bus.consume(topic, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05)
    return seen


def train(context: ServiceContext, config_hash: str, model_types: tuple[str, ...]) -> list[str]:
    """Train each model type on fresh processed data; return the run ids in that order."""
    data = helpers.training_event(helpers.write_data(context.store, config_hash, seed=7))
    for model_type in model_types:
        TrainService(context, model_type).handle(data)
    reports = [
        e
        for e in events(context.bus, MODEL_TRAINING)
        if isinstance(e, ModelTrainingEvent)
        and e.config_hash == config_hash
        and e.payload.status is TrainingStatus.SUCCESS
    ]
    by_type = {e.payload.model_type: e.payload.run_id for e in reports}
    return [str(by_type[m]) for m in model_types]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``condition`` held (fails the test after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


# ---------------------------------------------------------------- corrupt champion artifact


def artifact_file(context: ServiceContext, run_id: str, name: str) -> Path:
    """A file of the run's saved model in MLflow's artifact store (local artifacts here)."""
    run = context.tracker.client.get_run(run_id)
    return Path(urlparse(run.info.artifact_uri).path) / "model" / name


def test_fresh_replica_with_a_corrupt_champion_serves_the_fallback_until_repaired(
    context: ServiceContext, fields: dict[str, Any], tmp_path: Path
) -> None:
    older, champion = train(context, "c0ffee00" * 2, ("PERSISTENCE", "RIDGE"))
    promote_run(context, older)
    promote_run(context, champion)
    scaler = artifact_file(context, champion, "target_scaler.json")
    good = scaler.read_bytes()
    # Still valid JSON of the right shape: only the digest can tell it is not the model.
    scaler.write_bytes(good.replace(b"0", b"1", 1))
    assert scaler.read_bytes() != good

    fresh = ServiceContext(
        make_settings(
            fields,
            home=tmp_path / "fresh-replica",  # an empty model cache
            serving=ServingSettings(pointer_poll_seconds=0.1),
        )
    )
    app = create_app(fresh, follow_bus=False, close_context=True)
    with LiveServer(app) as client:
        started = time.monotonic()
        wait_for(lambda: client.get("/readyz").status_code == 200, 60, "readiness")
        ready_seconds = time.monotonic() - started
        ready = client.get("/readyz").json()
        assert ready["status"] == "degraded"
        assert ready["models"] == {"global": older}
        degraded = ready["degraded"]["global"]
        assert (degraded["champion_run_id"], degraded["serving_run_id"]) == (champion, older)
        assert "digest" in degraded["reason"]
        metrics = client.get("/metrics").text
        assert (
            f'flts_model_degraded{{champion_run_id="{champion}",identifier="global",'
            f'serving_run_id="{older}"}} 1.0'
        ) in metrics
        forecast_model = client.get("/v1/models/champion").json()["run_id"]
        assert forecast_model == older

        scaler.write_bytes(good)  # repaired in the artifact store
        repaired = time.monotonic()
        wait_for(
            lambda: client.get("/readyz").json()["models"] == {"global": champion},
            60,
            "serving the repaired champion",
        )
        recover_seconds = time.monotonic() - repaired
        ready = client.get("/readyz").json()
        assert (ready["status"], ready["degraded"]) == ("ready", {})
        assert "flts_model_degraded{" not in client.get("/metrics").text
    print(
        f"\ncorrupt champion ({fields['storage_url'].split(':')[0]}): fresh replica ready on the "
        f"fallback in {ready_seconds:.2f} s; serving the repaired champion "
        f"{recover_seconds:.2f} s after the repair"
    )


def test_damaged_cache_entry_is_fetched_again(context: ServiceContext) -> None:
    (run_id,) = train(context, "cafe0000" * 2, ("RIDGE",))
    promotion = promote_run(context, run_id)
    directory = context.tracker.model_dir(run_id, promotion.artifact_digest)
    (directory / "input_scaler.json").write_text("{}")  # the cache, not the store, is bad
    again = context.tracker.model_dir(run_id, promotion.artifact_digest)
    assert again == directory
    assert (again / "input_scaler.json").read_text() != "{}"
    context.tracker.load_model(run_id, promotion.artifact_digest)


# ---------------------------------------------------------------- two evaluators at once


def test_two_evaluators_at_once_carry_out_one_decision_once(
    fields: dict[str, Any], context: ServiceContext, caplog: pytest.LogCaptureFixture
) -> None:
    config_hash = "dec1de00" * 2
    evaluation = EvaluationSettings(expected_models=CHEAP, deadline_seconds=600)
    contexts = [ServiceContext(make_settings(fields, evaluation=evaluation)) for _ in range(2)]
    evaluators = [EvaluateService(c) for c in contexts]
    train(context, config_hash, CHEAP)
    report = next(
        e
        for e in events(context.bus, MODEL_TRAINING)
        if isinstance(e, ModelTrainingEvent) and e.payload.status is TrainingStatus.SUCCESS
    )
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def evaluate(evaluator: EvaluateService) -> None:
        start.wait()
        try:
            evaluator.handle(report)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    caplog.set_level(logging.INFO, logger="flts.services.evaluate")
    started = time.monotonic()
    threads = [threading.Thread(target=evaluate, args=(e,)) for e in evaluators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    seconds = time.monotonic() - started
    for c in contexts:
        c.close()
    assert errors == []

    promoted = [r for r in caplog.records if getattr(r, "event", None) == "promoted"]
    assert len(promoted) == 1  # exactly one evaluator carried it out
    decision = read_decision(context.store, "global", config_hash)
    assert decision is not None
    assert decision["state"] == "done"
    history = context.promotions.history()
    assert len(history) == 1
    pointer = context.promotions.current()
    assert pointer == history[0]
    assert pointer.run_id == decision["champion"]["run_id"]
    assert pointer.previous_run_id is None
    assert pointer.artifact_digest is not None
    assert pointer.artifact_digest == context.tracker.get_run(pointer.run_id).artifact_digest  # type: ignore[union-attr]
    announced = {e.event_id for e in events(context.bus, MODEL_SELECTED)}
    assert len(announced) == 1  # a repeat announcement carries the same event id
    print(
        f"\ntwo evaluators ({fields['storage_url'].split(':')[0]}): one decision in {seconds:.2f} s"
    )


# ---------------------------------------------------------------- SIGKILL mid-wait


def evaluator_process(fields: dict[str, Any], log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLTS_HOME": str(fields["home"]),
        "FLTS_BUS_URL": fields["bus_url"],
        "FLTS_TRACKING_URI": fields["tracking_uri"],
        "FLTS_STORAGE_URL": fields["storage_url"],
        "FLTS_EVALUATION__EXPECTED_MODELS": '["PERSISTENCE", "RIDGE"]',
        "FLTS_EVALUATION__DEADLINE_SECONDS": "600",
    }
    for name in ("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", "s3_region"):
        if name in fields:
            env[f"FLTS_{name.upper()}"] = fields[name]
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "flts", "worker", "evaluate"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_evaluator_killed_mid_wait_is_completed_by_a_restarted_one(
    fields: dict[str, Any], context: ServiceContext, tmp_path: Path
) -> None:
    config_hash = "5161c111" * 2
    log = tmp_path / "evaluator.log"
    first = evaluator_process(fields, log)
    processes = [first]
    try:
        (persistence,) = train(context, config_hash, ("PERSISTENCE",))
        marker = f"evaluations-pending/global/{config_hash}.json"
        wait_for(lambda: context.store.exists(marker), 120, "the evaluator's pending marker")
        first.send_signal(signal.SIGKILL)  # while it waits for RIDGE
        first.wait(timeout=30)
        (ridge,) = train(context, config_hash, ("RIDGE",))  # reported while nobody listens
        assert read_decision(context.store, "global", config_hash) is None
        restarted = time.monotonic()
        processes.append(evaluator_process(fields, log))
        wait_for(
            lambda: (
                (read_decision(context.store, "global", config_hash) or {}).get("state") == "done"
            ),
            180,
            "the restarted evaluator's decision",
        )
        seconds = time.monotonic() - restarted
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    decision = read_decision(context.store, "global", config_hash)
    assert decision is not None
    board = {e["model_type"]: e for e in decision["leaderboard"]}
    assert {board["PERSISTENCE"]["run_id"], board["RIDGE"]["run_id"]} == {persistence, ridge}
    assert decision["missing_models"] == []  # nothing reported was lost
    if decision["champion"] is not None:
        assert [p.run_id for p in context.promotions.history()] == [decision["champion"]["run_id"]]
    scheme = fields["storage_url"].split(":")[0]
    print(f"\nevaluator SIGKILL ({scheme}): decision {seconds:.2f} s after the restart")


# ---------------------------------------------------------------- truncated history entry


def test_truncated_history_entry_is_skipped_and_reported_and_rollback_works(
    context: ServiceContext, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = train(context, "7a11e400" * 2, CHEAP)
    for run_id in (first, second, third):
        promote_run(context, run_id)
    promotions: PromotionStore = context.promotions
    keys = list(context.store.list("model-promotion/global/history"))
    assert len(keys) == 3
    whole = context.store.get(keys[1])  # the entry of ``second``
    context.store.put(keys[1], whole[: len(whole) // 2])  # torn, as a crash mid-write leaves it
    damaged = worker_metrics().history_damaged.labels("global")
    before = damaged._value.get()

    caplog.set_level(logging.WARNING, logger="flts.promotion.pointer")
    started = time.monotonic()
    rolled = rollback_champion(context, reason="the damage drill")
    seconds = time.monotonic() - started
    assert (rolled.run_id, rolled.previous_run_id) == (first, third)
    current = promotions.current()
    assert isinstance(current, Promotion)
    assert current.run_id == first
    assert [p.run_id for p in promotions.history()] == [first, third, first]
    assert damaged._value.get() > before
    assert any(keys[1] in r.getMessage() for r in caplog.records)
    print(f"\ntruncated history entry: rollback in {seconds:.3f} s, damage reported")
