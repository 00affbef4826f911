"""The broker is unreachable when the gateway and a worker start, and goes away again during
an upload: every upload answers 201 or 503 with ``Retry-After``, a dataset is listed only once
its ``dataset-uploaded`` event is on the broker, and once the broker is back the gateway's
reconciler announces what was stored meanwhile, which the worker then processes.

Real processes throughout: ``flts gateway`` and ``flts worker preprocess`` as subprocesses,
a Tansu broker (Kafka API) started late and later killed and started again on the same port.
Tansu keeps everything in memory, so its second life starts empty: what was announced in the
first life is checked before it is killed, and the worker is only followed through the first
life (in the second, its partition's log starts again at offset 0, below the position the
worker had reached, which no broker that keeps its log would do).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from flts.bus import open_bus
from flts.data.synthetic import synthetic_traffic
from flts.events import DATASET_UPLOADED, TRAINING_DATA, Event, decode
from servers import free_port, wait_for
from servers.kafka import TansuServer, start_kafka

#: Short admin/flush timeout so a publish to a missing broker fails in seconds, and the
#: short group sessions Tansu needs for quick joins.
OPTIONS = (
    "partitions=1&replication_factor=1&timeout=3&session_timeout_ms=2000"
    "&heartbeat_interval_ms=500&static_membership=false"
)
RECONCILE_SECONDS = 1


class System:
    """A gateway and a preprocess worker on a broker port that may have no broker."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.kafka_port = free_port()
        self.bus_url = f"kafka://127.0.0.1:{self.kafka_port}?{OPTIONS}"
        self.gateway = f"http://127.0.0.1:{free_port()}"
        self.broker: TansuServer | None = None
        env = {
            **os.environ,
            "FLTS_HOME": str(tmp_path / "home"),
            "FLTS_BUS_URL": self.bus_url,
            "FLTS_STORAGE_URL": (tmp_path / "store").as_uri(),
            "FLTS_GATEWAY__RECONCILE_SECONDS": str(RECONCILE_SECONDS),
            "FLTS_GATEWAY__RETRY_AFTER_SECONDS": "7",
            "FLTS_BUS__OUTAGE_MAX_DELAY_SECONDS": "4",
        }
        port = self.gateway.rsplit(":", 1)[1]
        self.processes = [
            self._spawn("gateway", ["gateway", "--port", port], env),
            self._spawn("preprocess", ["worker", "preprocess"], env),
        ]

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp_path / f"{name}.log").open("ab") as log:  # the child keeps its own fd
            return subprocess.Popen(
                [sys.executable, "-m", "flts", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def start_broker(self) -> None:
        self.broker = start_kafka(self.tmp_path / "tansu", port=self.kafka_port)

    def kill_broker(self) -> None:
        assert self.broker is not None
        assert self.broker.process is not None
        self.broker.process.kill()
        self.broker.process.wait()
        self.broker.stop()
        self.broker = None

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.broker is not None:
            self.broker.stop()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def upload(self, seed: int) -> httpx.Response:
        frame = synthetic_traffic(500, seed=seed)
        train = frame.iloc[:400].to_csv(index=False).encode()
        test = frame.iloc[400:].to_csv(index=False).encode()
        return httpx.post(
            f"{self.gateway}/v1/datasets",
            files={
                "train": ("train.csv", io.BytesIO(train), "text/csv"),
                "test": ("test.csv", io.BytesIO(test), "text/csv"),
            },
            data={"identifier": f"Station{seed}"},
            timeout=60,
        )

    def listed(self) -> set[str]:
        response = httpx.get(f"{self.gateway}/v1/datasets", timeout=30)
        assert response.status_code == 200, response.text
        return {d["dataset_id"] for d in response.json()["datasets"]}

    def events(self, topic: str) -> list[Event]:
        """Everything on ``topic`` in the broker's current life, read by offsets on every
        partition (the operator read behind ``flts dlq list``), outside any group."""
        with open_bus(self.bus_url) as bus:
            return [decode(message.value) for message in bus._read(topic, 1_000)]

    def logs(self) -> str:
        return "\n".join(
            (self.tmp_path / f"{n}.log").read_text(errors="replace")[-3_000:]
            for n in ("gateway", "preprocess")
        )


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    running = System(tmp_path)
    try:
        wait_for(
            lambda: httpx.get(f"{running.gateway}/healthz").status_code == 200,
            60,
            "gateway",
            errors=(httpx.HTTPError,),
        )
        yield running
    finally:
        running.stop()


def announced(events: list[Event]) -> set[str]:
    return {str(getattr(e.payload, "dataset_id", "")) for e in events}


def processed(events: list[Event]) -> set[str]:
    """Dataset ids the preprocess worker turned into training data (by correlation id)."""
    return {e.correlation_id for e in events}


def check_upload(response: httpx.Response) -> str | None:
    """The dataset id of an accepted upload; for a 503, that it says when to retry."""
    if response.status_code == 201:
        return str(response.json()["dataset_id"])
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "7"
    return None


def test_broker_down_at_start_and_during_an_upload_loses_nothing(system: System) -> None:
    # 1. No broker yet: the gateway and the worker are up and waiting; the upload is stored
    #    but cannot be announced, so it is not listed.
    first = system.upload(1)
    assert check_upload(first) is None
    assert system.listed() == set()
    assert system.alive()

    # 2. The broker arrives: the reconciler announces the stored dataset, then it is listed.
    system.start_broker()
    back = time.monotonic()
    [first_id] = wait_for(system.listed, 60, "the stored dataset to be announced")
    listed_after = time.monotonic() - back
    uploads = system.events(DATASET_UPLOADED)
    assert announced(uploads) == {first_id}
    second = system.upload(2)
    second_id = check_upload(second)
    assert second_id is not None  # the broker is up: accepted and announced at once
    uploads = system.events(DATASET_UPLOADED)
    assert announced(uploads) == system.listed() == {first_id, second_id}
    wait_for(
        lambda: len(processed(system.events(TRAINING_DATA))) == 2,
        90,
        "the worker that started without a broker to process both datasets",
    )
    first_life = announced(uploads)

    # 3. The broker goes away again; an upload meanwhile answers 201 or 503 and is listed only
    #    if it was announced.
    system.kill_broker()
    third = system.upload(3)
    third_id = check_upload(third)
    assert system.listed() - {first_id, second_id} <= ({third_id} if third_id else set())

    # 4. The broker's second life (empty): the reconciler announces the third dataset.
    system.start_broker()
    back = time.monotonic()
    listed: set[str] = wait_for(
        lambda: ids if len(ids := system.listed()) == 3 else set(),
        60,
        "the dataset stored during the outage to be announced",
    )
    relisted_after = time.monotonic() - back
    second_life = announced(system.events(DATASET_UPLOADED))
    (third_id,) = listed - {first_id, second_id}
    assert third_id in second_life
    assert listed <= first_life | second_life  # every listed dataset was announced
    assert system.alive(), system.logs()
    print(
        f"broker back: stored dataset announced and listed after {listed_after:.1f}s "
        f"(down at start) and {relisted_after:.1f}s (down during an upload)"
    )
