"""``make e2e``: the distributed system for real, on one machine.

1. Starts a Kafka-API broker (Tansu), an S3 server (SeaweedFS), a fresh PostgreSQL database
   and an MLflow server on it, all on 127.0.0.1 with unique names.
2. Starts every FLTS service as its own OS process with kafka://, s3:// and http:// URLs:
   gateway, preprocess, one trainer per model type, evaluator, batch inference and two
   inference replicas.
3. Uploads a training CSV and its test file through the gateway, waits for the champion and
   checks that both replicas serve it and agree.
4. Publishes the same upload event again and checks nothing is retrained.
5. Uploads a second configuration (a traffic regime change) that promotes a new champion
   while a client sends requests to both replicas: both switch, zero failed requests.
6. Meanwhile kills one trainer in the middle of training; its message is redelivered to the
   restarted trainer and the pipeline still completes.
7. The live loop: a second station is trained, its test file replayed as observations with
   a regime change; the monitor detects the drift, exactly one retraining runs from the
   stored observations, and the new champion's live error is lower than the old one's (the
   figures go to build/e2e/live_loop_distributed.json).
8. Stops everything it started (also on failure); exits non-zero naming each failed check.

Run: ``make e2e``, or from the checkout with the tests directory on the path (the dev
servers live there): ``PYTHONPATH=tests python scripts/e2e_distributed.py [--data-dir
../shared/datasets] [--station PobleSec]``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from flts.bus import open_bus
from flts.events import (
    DATASET_UPLOADED,
    MODEL_SELECTED,
    MODEL_TRAINING,
    DatasetUploaded,
    DatasetUploadedEvent,
    Event,
    ModelTrainingEvent,
)
from flts.security import create_key
from flts.settings import Settings
from flts.storage import ObjectStore
from flts.supervisor import Supervisor, service_specs
from flts.tracking import Tracker
from servers import free_port
from servers.client import (
    LoadClient,
    bearer,
    champion_run,
    forecast_body,
    healthy,
    scale_traffic,
    upload_dataset,
    wait_http,
)
from servers.kafka import start_kafka
from servers.live_loop import DRIFT_SETTINGS, run_regime_change
from servers.mlflow_server import start_mlflow_server
from servers.postgres import create_database
from servers.s3 import start_seaweedfs

MODELS = ["LSTM", "GRU", "RIDGE", "PERSISTENCE", "PROPHET"]
KILLED = "LSTM"
IDENTIFIER = "e2e"
LIVE_IDENTIFIER = "e2e-live"
#: Short sessions so a killed consumer's partitions move on quickly (Tansu joins in ~1 s).
KAFKA_OPTIONS = "session_timeout_ms=6000&heartbeat_interval_ms=500"


class Checks:
    """Collects pass/fail lines and phase timings; the exit code is the number of failures."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.timings: dict[str, float] = {}

    def check(self, ok: bool, what: str) -> bool:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}", flush=True)
        if not ok:
            self.failures.append(what)
        return ok

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - started, 1)
            print(f"   {name}: {self.timings[name]}s", flush=True)


class EventLog:
    """Every model-training and model-selected event, from its own consumer group."""

    def __init__(self, bus_url: str) -> None:
        self.events: list[tuple[float, Event]] = []
        self.stop = threading.Event()
        self._bus = open_bus(bus_url)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._bus.consume(
            [MODEL_TRAINING, MODEL_SELECTED],
            f"e2e-watch-{uuid.uuid4().hex[:8]}",
            lambda event: self.events.append((time.monotonic(), event)),
            stop=self.stop,
            poll_timeout=0.5,
        )

    def training(self, model: str, status: str, after: float = 0.0) -> list[ModelTrainingEvent]:
        return [
            e
            for t, e in self.events
            if t >= after
            and isinstance(e, ModelTrainingEvent)
            and e.payload.model_type == model
            and e.payload.status.value == status
        ]

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)
        self._bus.close()


#: The API key of this run (``run`` mints it; every request of the script carries it).
API_KEY: dict[str, str] = {}


def upload(gateway: str, train: bytes, test: bytes) -> dict[str, Any]:
    response = upload_dataset(gateway, train, test, IDENTIFIER, key=API_KEY["key"])
    response.raise_for_status()
    meta: dict[str, Any] = response.json()
    return meta


def champion(api: str, identifier: str = IDENTIFIER) -> str | None:
    return champion_run(api, identifier, API_KEY["key"])


def scaled(csv: bytes, factor: float) -> bytes:
    """The same traffic at another level: a regime change the old champion has not seen."""
    return scale_traffic(pd.read_csv(io.BytesIO(csv)), factor).to_csv(index=False).encode()


def replay_upload(bus_url: str, meta: dict[str, Any]) -> None:
    """Publish the gateway's upload event again: same event id, same payload."""
    event = DatasetUploadedEvent(
        event_id=meta["event_id"],
        correlation_id=meta["correlation_id"],
        identifier=meta["identifier"],
        payload=DatasetUploaded(
            dataset_id=meta["dataset_id"],
            filename=meta["train"]["filename"],
            train_key=meta["train"]["key"],
            test_key=meta["test"]["key"],
            size_bytes=meta["train"]["size_bytes"],
            digest=meta["train"]["digest"],
        ),
    )
    with open_bus(bus_url) as bus:
        bus.publish(DATASET_UPLOADED, event)


def run(data_dir: Path, station: str, workdir: Path) -> Checks:
    checks = Checks()
    train = (data_dir / f"{station}.csv").read_bytes()
    test = (data_dir / f"{station}_test.csv").read_bytes()
    with ExitStack() as stack:
        with checks.phase("1. start Kafka, S3, PostgreSQL, MLflow"):
            kafka = stack.enter_context(start_kafka(workdir / "logs"))
            bucket = f"flts-e2e-{uuid.uuid4().hex[:8]}"
            s3 = stack.enter_context(start_seaweedfs(workdir / "s3", buckets=[bucket]))
            database = stack.enter_context(create_database("flts_e2e"))
            mlflow = stack.enter_context(
                start_mlflow_server(
                    database.url,
                    artifacts_destination=f"s3://{bucket}/mlflow",
                    workdir=workdir / "mlflow",
                    s3=s3.credentials,
                )
            )
        bus_url = f"{kafka.url}?{KAFKA_OPTIONS}"
        gateway_port, ports = free_port(), [free_port(), free_port()]
        keys_file = workdir / "api-keys.json"
        API_KEY["key"] = create_key(keys_file, "e2e", ["forecast", "upload"], replace=True)
        env = {
            **os.environ,
            **s3.credentials.env(),
            "FLTS_HOME": str(workdir / "home"),
            "FLTS_BUS_URL": bus_url,
            "FLTS_STORAGE_URL": f"s3://{bucket}/data",
            "FLTS_TRACKING_URI": mlflow.url,
            "FLTS_GATEWAY__PORT": str(gateway_port),
            "FLTS_SECURITY__KEYS_FILE": str(keys_file),
            "FLTS_SERVING__POINTER_POLL_SECONDS": "1",
            "FLTS_EVALUATION__EXPECTED_MODELS": json.dumps(MODELS),
            **DRIFT_SETTINGS,
        }
        os.environ.update({k: v for k, v in env.items() if k.startswith(("FLTS_", "AWS_"))})
        settings = Settings()
        gateway = f"http://127.0.0.1:{gateway_port}"
        apis = [f"http://127.0.0.1:{port}" for port in ports]

        with checks.phase("2. start every FLTS service"):
            supervisor = Supervisor(
                service_specs(settings, MODELS, serve_ports=ports),
                log_dir=workdir / "logs",
                env=env,
                max_restarts=3,
            )
            supervisor.start()
            stack.callback(supervisor.stop)
            wait_http(partial(healthy, gateway), 120, "gateway")
            for api in apis:
                wait_http(partial(healthy, api), 120, api)
            events = EventLog(bus_url)
            stack.callback(events.close)

        with checks.phase("3. upload, champion on both replicas"):
            meta = upload(gateway, train, test)
            first = str(wait_http(lambda: champion(apis[0]), 600, "the first champion"))
            wait_http(lambda: champion(apis[1]) == first, 60, "the second replica")
            body = forecast_body(test, IDENTIFIER)
            auth = bearer(API_KEY["key"])
            checks.check(
                all(httpx.post(f"{a}/v1/forecast", json=body).status_code == 401 for a in apis),
                "a forecast without a key is refused (401)",
            )
            answers = [
                httpx.post(f"{api}/v1/forecast", json=body, timeout=30, headers=auth)
                for api in apis
            ]
            checks.check(all(a.status_code == 200 for a in answers), "both replicas answer 200")
            checks.check(
                answers[0].json() == answers[1].json(),
                f"both replicas serve champion {first} and agree on the forecast",
            )

        tracker = Tracker(settings)
        config_hash = answers[0].headers["x-config-hash"]
        with checks.phase("4. same upload event again: nothing retrained"):
            before = len(tracker.runs_for(config_hash=config_hash, identifier=IDENTIFIER))
            replay_upload(bus_url, meta)
            time.sleep(15)  # time for any (wrong) retraining to start and log a run
            after = len(tracker.runs_for(config_hash=config_hash, identifier=IDENTIFIER))
            checks.check(after == before, f"tracking runs for the config: {before} -> {after}")
            checks.check(champion(apis[0]) == first, "champion unchanged")

        with checks.phase("5+6. new config under load, a trainer killed mid-training"):
            with ExitStack() as load_stack:
                loads = [
                    load_stack.enter_context(LoadClient(api, body, key=API_KEY["key"]))
                    for api in apis
                ]
                started = time.monotonic()
                upload(gateway, scaled(train, 0.2), scaled(test, 0.2))
                wait_http(
                    lambda: events.training(KILLED, "RUNNING", started), 300, f"{KILLED} start"
                )
                time.sleep(2)  # in the middle of training
                killed = not events.training(KILLED, "SUCCESS", started)
                supervisor.kill(f"train-{KILLED.lower()}")
                checks.check(killed, f"killed train-{KILLED.lower()} before it finished")
                wait_http(
                    lambda: supervisor.check() == [] and all(supervisor.alive().values()),
                    60,
                    "the restarted trainer",
                )
                wait_http(
                    lambda: events.training(KILLED, "SUCCESS", started), 600, f"{KILLED} again"
                )
                second = str(
                    wait_http(
                        lambda: (run := champion(apis[0])) != first and run, 600, "a new champion"
                    )
                )
                for load in loads:
                    wait_http(partial(load.seen.get, second, 0), 60, f"{load.api} swap")
            failures = [f for load in loads for f in load.failures]
            total = sum(load.requests for load in loads)
            checks.check(
                failures == [], f"{total} requests during the swap, {len(failures)} failed"
            )
            for load in loads:
                checks.check(load.seen.get(first, 0) > 0, f"{load.api} answered with the old run")
                checks.check(load.seen.get(second, 0) > 0, f"{load.api} switched to {second}")
            redelivered = events.training(KILLED, "SUCCESS", started)
            checks.check(
                bool(redelivered), f"{KILLED} message redelivered and trained after the kill"
            )
            checks.timings["requests_during_swap"] = total
            checks.timings["failed_requests_during_swap"] = len(failures)

        with checks.phase("7. live loop: observations, drift, one retraining, a better champion"):
            seen = run_regime_change(
                gateway=gateway,
                bus_url=bus_url,
                api=apis[0],
                key=API_KEY["key"],
                store=ObjectStore(settings.storage.url),
                identifier=LIVE_IDENTIFIER,
                workdir=workdir,
                champion_timeout=600,
                retrain_timeout=600,
            )
            checks.check(
                len(seen.triggers) == 1 and seen.triggers[0]["reason"] == "drift",
                f"exactly one retraining, for drift: {[t['reason'] for t in seen.triggers]}",
            )
            checks.check(seen.triggers[0]["promoted"] is True, "the retrained model was promoted")
            checks.check(
                seen.after["nrmse"] < seen.before["nrmse"],
                f"live NRMSE {seen.before['nrmse']:.3f} before, {seen.after['nrmse']:.3f} after",
            )
            checks.check(
                champion(apis[1], LIVE_IDENTIFIER) == seen.second,
                "the other replica serves the retrained champion",
            )
            out = Path("build/e2e/live_loop_distributed.json")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(seen.report, indent=2) + "\n")
            checks.timings.update(
                {k if k.startswith("live_") else f"live_{k}": v for k, v in seen.report.items()}
            )
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--station", default="PobleSec")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory.")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="flts-e2e-"))
    started = time.perf_counter()
    try:
        checks = run(args.data_dir, args.station, workdir)
    except Exception as exc:  # a phase that could not even finish is a failed check
        print(f"  [FAIL] {type(exc).__name__}: {exc}", flush=True)
        print(f"logs: {workdir / 'logs'}", flush=True)
        return 1
    timings = {**checks.timings, "total": round(time.perf_counter() - started, 1)}
    print(json.dumps(timings, indent=1))
    if checks.failures:
        print(f"{len(checks.failures)} failed checks; logs: {workdir / 'logs'}")
        return 1
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    print("e2e: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
