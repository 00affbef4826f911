"""The object store goes away mid-pipeline and comes back: nothing is dead-lettered, nothing
accepted is lost, and the run reaches its decision once the store answers again.

The store is a real SeaweedFS (S3) killed with SIGKILL as soon as the run's training data
is announced (the trainers and the evaluator still have their reads and writes ahead), kept
down for 60 s or 300 s, then started again on the same ports and data. The bus is SQLite and
tracking a local MLflow database, so only the store is out. The services keep the default
outage policy (budget 900 s, backoff 1 s doubling to 30 s with jitter), and the time from the
store's return to the decision is printed as the time to recover.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.bus import open_bus
from flts.data.synthetic import synthetic_traffic
from flts.events import DATASET_UPLOADED, MODEL_TRAINING, TRAINING_DATA
from flts.pipeline import run_pipeline
from flts.settings import Settings
from servers.s3 import SeaweedFS, start_seaweedfs

IDENTIFIER = "Station1"
MODELS = ["PERSISTENCE", "RIDGE"]
BUCKET = "flts-outage"


@pytest.fixture
def seaweedfs(tmp_path: Path) -> Iterator[SeaweedFS]:
    """A private ``weed mini`` per test: the test kills and restarts it."""
    with start_seaweedfs(tmp_path / "seaweedfs", [BUCKET]) as server:
        yield server


class Outage:
    """Kills the store when the run's training data is announced, restarts it after
    ``seconds``; remembers when it went down and came back."""

    def __init__(self, server: SeaweedFS, seconds: float) -> None:
        self.server = server
        self.seconds = seconds
        self.begin = threading.Event()
        self.down_at = 0.0
        self.up_at = 0.0
        self.thread = threading.Thread(target=self._run, name="outage", daemon=True)
        self.thread.start()

    def progress(self, line: str) -> None:
        if line.startswith("preprocessed:"):
            self.begin.set()

    def _run(self) -> None:
        if not self.begin.wait(120):
            return
        self.server.kill()
        self.down_at = time.monotonic()
        time.sleep(self.seconds)
        self.server.start()
        self.up_at = time.monotonic()


def run_through_outage(
    tmp_path: Path,
    mlflow_template: Path,
    seaweedfs: SeaweedFS,
    seconds: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    bus_url = f"sqlite:///{home / 'bus.db'}?poll_interval=0.05"
    credentials = seaweedfs.credentials
    settings = Settings(
        home=home,
        bus_url=bus_url,
        storage_url=f"s3://{BUCKET}/run",
        s3_endpoint_url=credentials.endpoint_url,
        s3_access_key_id=credentials.access_key_id,
        s3_secret_access_key=credentials.secret_access_key,
        s3_region=credentials.region,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
    )
    frame = synthetic_traffic(900, seed=4)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:700].to_csv(train, index=False)
    frame.iloc[700:].to_csv(test, index=False)
    outage = Outage(seaweedfs, seconds)

    with caplog.at_level(logging.WARNING, logger="flts.bus.base"):
        result = run_pipeline(
            settings,
            train_csv=train,
            test_csv=test,
            identifier=IDENTIFIER,
            models=MODELS,
            progress=outage.progress,
            timeout=seconds + 600,
        )
    decided_at = time.monotonic()
    outage.thread.join(timeout=60)

    assert outage.down_at, "the store never went down"
    assert outage.up_at, "the store never came back"
    assert decided_at > outage.up_at  # the outage was mid-pipeline: no decision without it
    waits = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert any("object store" in r.getMessage() for r in waits), "no service met the outage"
    assert sorted(line["model_type"] for line in result.leaderboard) == MODELS
    with open_bus(bus_url) as bus:
        for topic in (DATASET_UPLOADED, TRAINING_DATA, MODEL_TRAINING):
            assert bus.dead_letters(topic) == [], topic  # an outage is never a dead letter
    recovered = decided_at - outage.up_at
    print(
        f"object store down {outage.up_at - outage.down_at:.0f}s mid-pipeline: decision "
        f"{recovered:.1f}s after it came back ({len(waits)} outage waits logged)"
    )


def test_the_object_store_down_for_60s_mid_pipeline_is_waited_out(
    tmp_path: Path,
    mlflow_template: Path,
    seaweedfs: SeaweedFS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_through_outage(tmp_path, mlflow_template, seaweedfs, 60, caplog)


def test_the_object_store_down_for_300s_mid_pipeline_is_waited_out(
    tmp_path: Path,
    mlflow_template: Path,
    seaweedfs: SeaweedFS,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_through_outage(tmp_path, mlflow_template, seaweedfs, 300, caplog)
