"""Faults of the embedded bus: damaged rows written into the SQLite database while a real
pipeline runs, and a message whose handler kills its consumer process every time.

The rows are written with plain SQL on a connection of their own, as a bug, a manual edit or
another tool would; they share the run's key (its identifier), so every consumer meets them
in its lane, in front of or between the pipeline's own events.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from contract.bus_suite import training_event
from flts.bus import DeadLetter, open_bus
from flts.cli.dlq import app as dlq_app
from flts.data.synthetic import synthetic_traffic
from flts.events import DATASET_UPLOADED, MODEL_TRAINING, TRAINING_DATA
from flts.pipeline import run_pipeline
from flts.settings import Settings

IDENTIFIER = "Station1"
MODELS = ["PERSISTENCE", "RIDGE"]

#: value, headers: one row of each kind of damage (a value of the wrong type, headers that
#: are not JSON, JSON headers that are not string pairs, bytes that are not an event).
DAMAGE: list[tuple[object, object]] = [
    ('{"schema_version": 1, "type": "dataset-uploaded"}', "{}"),
    (b'{"schema_version": 1}', "{not json"),
    (b"{}", '["a", "list"]'),
    (b"\xff\xfe not an event", "{}"),
    (12345, "{}"),
]


def damage(database: Path, topic: str) -> None:
    """Append one row of every :data:`DAMAGE` kind to ``topic``, bypassing the bus."""
    with sqlite3.connect(database, timeout=10) as db:
        db.executemany(
            "INSERT INTO messages (topic, key, value, headers, created_at) VALUES (?, ?, ?, ?, ?)",
            [(topic, IDENTIFIER, value, headers, time.time()) for value, headers in DAMAGE],
        )


def raw(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def test_damaged_rows_mid_pipeline_end_in_the_dlq_and_the_pipeline_completes(
    tmp_path: Path, mlflow_template: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")
    database = home / "bus.db"
    bus_url = f"sqlite:///{database}?poll_interval=0.02"
    settings = Settings(
        home=home,
        bus_url=bus_url,
        storage_url=f"file://{home / 'store'}",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
    )
    with open_bus(bus_url):
        pass  # creates the schema
    # In front of the upload, on the first two hops...
    damage(database, DATASET_UPLOADED)
    damage(database, TRAINING_DATA)
    frame = synthetic_traffic(900, seed=3)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:700].to_csv(train, index=False)
    frame.iloc[700:].to_csv(test, index=False)
    damaged_midway: list[str] = []

    def progress(line: str) -> None:
        # ...and on the trainers' output while they train, between the run's own events.
        if line.startswith("preprocessed:") and not damaged_midway:
            damage(database, MODEL_TRAINING)
            damaged_midway.append(line)

    result = run_pipeline(
        settings,
        train_csv=train,
        test_csv=test,
        identifier=IDENTIFIER,
        models=MODELS,
        progress=progress,
        timeout=120,
    )

    assert damaged_midway
    assert sorted(line["model_type"] for line in result.leaderboard) == MODELS
    with open_bus(bus_url) as bus:
        letters = {t: bus.dead_letters(t) for t in (DATASET_UPLOADED, TRAINING_DATA)}
        letters[MODEL_TRAINING] = bus.dead_letters(MODEL_TRAINING)
    expected = sorted(raw(value) for value, _ in DAMAGE)
    for topic, found in letters.items():
        for group in {letter.group for letter in found}:
            mine = [letter for letter in found if letter.group == group]
            assert sorted(letter.value for letter in mine) == expected, (topic, group)
            assert all(_unreadable(letter) for letter in mine), (topic, group)
    assert {letter.group for letter in letters[DATASET_UPLOADED]} == {"preprocess"}
    assert len({letter.group for letter in letters[TRAINING_DATA]}) >= len(MODELS)
    assert "evaluate" in {letter.group for letter in letters[MODEL_TRAINING]}

    listed = CliRunner().invoke(dlq_app, ["list", "-o", "json", "--bus-url", bus_url])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert len(rows) == sum(len(found) for found in letters.values())
    assert any("headers are not JSON" in row["error"] for row in rows)


def _unreadable(letter: DeadLetter) -> bool:
    """Dead-lettered as bytes no consumer can read, at once (no handler call)."""
    return letter.error.startswith("EventValidationError: ") and letter.attempts == 0


CONSUMER = """
import os, sys
from flts.bus import RetryPolicy, open_bus

url, topic, group, out, limit = sys.argv[1:6]

def handle(event):
    n = int(event.payload.model_type[1:])
    if n == 1:
        os._exit(17)  # dies mid-handler, holding the message's lease
    with open(out, "a") as sink:
        sink.write(f"{n}\\n")

bus = open_bus(url)
stats = bus.consume(
    topic, group, handle, max_idle=0.5, poll_timeout=0.05,
    retry=RetryPolicy(max_deliveries=int(limit)),
)
print(f"dead-lettered {stats.dead_lettered} handled {stats.handled}", flush=True)
"""

LIMIT = 3
LEASE = 0.3  # seconds before a dead consumer's claim may be taken over


def test_a_message_that_kills_its_consumer_process_is_counted_and_dead_lettered(
    tmp_path: Path,
) -> None:
    """The delivery count is committed with the claim, before the handler runs: a process
    killed by its handler still counted its delivery, so the crash loop ends."""
    url = f"sqlite:///{tmp_path / 'bus.db'}?lease_seconds={LEASE}&poll_interval=0.01"
    with open_bus(url) as bus:
        for n in range(4):
            bus.publish("jobs", training_event(n, key=IDENTIFIER))
    out = tmp_path / "handled.txt"
    codes: list[int] = []
    last = ""
    while (not codes or codes[-1] != 0) and len(codes) <= LIMIT + 2:
        child = subprocess.run(
            [sys.executable, "-c", CONSUMER, url, "jobs", "workers", str(out), str(LIMIT)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        codes.append(child.returncode)
        last = child.stdout + child.stderr
        time.sleep(LEASE)  # the dead consumer's lease runs out
    assert codes == [17] * LIMIT + [0], last
    assert "dead-lettered 1 handled 2" in last
    assert out.read_text().split() == ["0", "2", "3"]
    with open_bus(url) as bus:
        [letter] = bus.dead_letters("jobs")
        assert f"delivered {LIMIT} times without a commit" in letter.error
        assert bus.pending("workers", "jobs") == 0
