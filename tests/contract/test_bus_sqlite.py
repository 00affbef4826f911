"""The bus contract on ``sqlite://``, plus what only a durable, multi-process backend owes:
durability across bus objects, redelivery after a consumer process is killed, and no double
processing across OS processes."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.bus import Bus, RetryPolicy, open_bus
from flts.bus.sqlite import SQLiteBus
from flts.events import Event, encode
from flts.exceptions import ConfigurationError

from .bus_suite import BusContract, BusFactory, training_event

TOPIC = "jobs"
GROUP = "workers"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "bus.db"


class TestSQLiteBus(BusContract):
    @pytest.fixture
    def bus_factory(self, db_path: Path) -> Iterator[BusFactory]:
        opened: list[Bus] = []

        def factory() -> Bus:
            opened.append(open_bus(f"sqlite:///{db_path}", poll_interval=0.01))
            return opened[-1]

        yield factory
        for bus in opened:
            bus.close()


# ---------------------------------------------------------------------------- durability


def test_messages_and_processed_ids_survive_a_new_bus_object(db_path: Path) -> None:
    event = training_event(1)
    with SQLiteBus(db_path) as first:
        first.publish(TOPIC, event)
        first.publish(TOPIC, training_event(2))
    with SQLiteBus(db_path, poll_interval=0.01) as second:
        got: list[str] = []
        second.consume(TOPIC, GROUP, lambda e: got.append(e.event_id), max_messages=1)
    with SQLiteBus(db_path, poll_interval=0.01) as third:
        third.publish(TOPIC, event)  # the same event again, after a restart
        stats = third.consume(TOPIC, GROUP, lambda e: got.append(e.event_id), max_idle=0.3)
    assert got[0] == event.event_id
    assert len(got) == 2  # event 2 handled; the replayed event 1 skipped as a duplicate
    assert stats.duplicates == 1


def test_database_uses_wal_and_a_busy_timeout(db_path: Path) -> None:
    with SQLiteBus(db_path, busy_timeout=3) as bus:
        assert bus._db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert bus._db.execute("PRAGMA busy_timeout").fetchone() == (3000,)


# ---------------------------------------------------------------------------- leases


def test_a_slow_handler_keeps_its_lease(db_path: Path) -> None:
    """Lease renewal: a live consumer is not mistaken for a dead one."""
    worker = SQLiteBus(db_path, lease_seconds=0.3, poll_interval=0.01)
    rival = SQLiteBus(db_path, lease_seconds=0.3, poll_interval=0.01)
    worker.publish(TOPIC, training_event(1))
    in_handler = threading.Event()

    def slow(event: Event) -> None:
        in_handler.set()
        time.sleep(1.0)  # over three lease periods

    thread = threading.Thread(target=lambda: worker.consume(TOPIC, GROUP, slow, max_messages=1))
    thread.start()
    assert in_handler.wait(5)
    assert rival._poll([TOPIC], GROUP, "rival", timeout=0.8) is None
    thread.join(5)
    assert rival.pending(GROUP, TOPIC) == 0
    worker.close()
    rival.close()


def test_a_message_that_keeps_killing_its_consumer_is_dead_lettered(db_path: Path) -> None:
    with SQLiteBus(db_path, lease_seconds=0.05, poll_interval=0.01) as bus:
        bus.publish(TOPIC, training_event(1))
        for _ in range(3):  # three consumers claim it and "die" without committing
            assert bus._poll([TOPIC], GROUP, "doomed", timeout=1) is not None
            time.sleep(0.06)
        called: list[str] = []
        stats = bus.consume(
            TOPIC,
            GROUP,
            lambda e: called.append(e.event_id),
            max_messages=1,
            max_idle=2,
            retry=RetryPolicy(max_deliveries=3),
        )
        assert called == []
        assert stats.dead_lettered == 1
        [letter] = bus.dead_letters(TOPIC)
        assert "delivered 3 times without a commit" in letter.error


# ---------------------------------------------------------------------------- damaged rows


def insert_row(bus: SQLiteBus, topic: str, key: object, value: object, headers: object) -> None:
    """Write a ``messages`` row straight into the table, bypassing ``publish`` (SQLite keeps
    whatever type it is given), as a bug, a manual edit or another tool could."""
    bus._db.execute(
        "INSERT INTO messages (topic, key, value, headers, created_at) VALUES (?, ?, ?, ?, 0)",
        (topic, key, value, headers),
    )


DAMAGED_ROWS: list[tuple[object, object, object, str]] = [
    # key, value, headers, what the dead letter's error names
    ("ElBorn", '{"schema_version": 1}', "{}", "value is str, not bytes"),
    ("ElBorn", 10**12, "{}", "value is int, not bytes"),  # bytes(10**12): a MemoryError
    ("ElBorn", 2.5, "{}", "value is float, not bytes"),
    ("ElBorn", b"{}", "{not json", "headers are not JSON"),
    ("ElBorn", b"{}", "[1, 2]", "headers are not string pairs"),
    ("ElBorn", b"{}", '{"n": 1}', "headers are not string pairs"),
    ("ElBorn", b"{}", b"\x00\xff", "headers are not JSON"),
    (b"\xffkey", b"{}", "{}", "key is bytes, not text"),
]


def test_damaged_rows_are_dead_lettered_with_their_raw_bytes(db_path: Path) -> None:
    with SQLiteBus(db_path, poll_interval=0.01) as bus:
        for key, value, headers, _ in DAMAGED_ROWS:
            insert_row(bus, TOPIC, key, value, headers)
        good = training_event(1)
        bus.publish(TOPIC, good)
        got: list[str] = []
        stats = bus.consume(
            TOPIC, GROUP, lambda e: got.append(e.event_id), max_idle=1, poll_timeout=0.05
        )
        assert got == [good.event_id]  # the consumer went on past every damaged row
        assert (stats.handled, stats.dead_lettered) == (1, len(DAMAGED_ROWS))
        letters = bus.dead_letters(TOPIC)
        assert len(letters) == len(DAMAGED_ROWS)
        for letter, (_, value, _headers, reason) in zip(letters, DAMAGED_ROWS, strict=True):
            assert letter.error.startswith("EventValidationError: unreadable stored message")
            assert reason in letter.error
            assert letter.attempts == 0
            assert letter.group == GROUP
            expected = value if isinstance(value, bytes) else str(value).encode()
            assert letter.value == expected  # raw bytes, replayable
        assert letters[3].headers["x-dlq-raw-headers"] == "{not json"
        assert letters[4].headers["x-dlq-raw-headers"] == "[1, 2]"
        assert bus.pending(GROUP, TOPIC) == 0


def test_a_replayed_damaged_row_is_stored_properly_and_handled(db_path: Path) -> None:
    """A TEXT value holding a valid event is dead-lettered (its type is wrong), and replaying
    it publishes proper bytes that a consumer then handles."""
    event = training_event(3)
    with SQLiteBus(db_path, poll_interval=0.01) as bus:
        insert_row(bus, TOPIC, "ElBorn", encode(event).decode(), "{}")
        got: list[str] = []
        bus.consume(TOPIC, GROUP, lambda e: got.append(e.event_id), max_messages=1, max_idle=5)
        [letter] = bus.dead_letters(TOPIC)
        bus.replay(letter)
        bus.consume(TOPIC, GROUP, lambda e: got.append(e.event_id), max_messages=1, max_idle=5)
        assert got == [event.event_id]


def test_a_damaged_delivery_count_is_read_as_a_number(db_path: Path) -> None:
    with SQLiteBus(db_path, poll_interval=0.01) as bus:
        bus.publish(TOPIC, training_event(1))
        claimed = bus._poll([TOPIC], GROUP, "c1", timeout=1)
        assert claimed is not None
        bus._db.execute("UPDATE deliveries SET attempts = '2', lease_until = 0")
        again = bus._poll([TOPIC], GROUP, "c2", timeout=1)
        assert again is not None
        assert again.delivery_count == 3


def test_the_delivery_count_is_durable_before_the_handler_runs(db_path: Path) -> None:
    """The claim's transaction, count included, is committed before ``_poll`` returns: a
    second connection (another process) sees it while the handler is still to run."""
    with SQLiteBus(db_path, poll_interval=0.01) as bus, SQLiteBus(db_path) as other:
        bus.publish(TOPIC, training_event(1))
        seen: list[tuple[int, ...]] = []

        def handler(event: Event) -> None:
            seen.extend(other._db.execute("SELECT attempts, done FROM deliveries").fetchall())

        bus.consume(TOPIC, GROUP, handler, max_messages=1, max_idle=5)
        assert seen == [(1, 0)]


# ---------------------------------------------------------------------------- processes

_CHILD = r"""
import sys, time
from flts.bus import open_bus

url, topic, group, mode, out = sys.argv[1:6]
bus = open_bus(url)
print("ready", flush=True)
if mode == "hang":  # claim one message, then hang until killed
    def handler(event):
        print("handling", event.event_id, flush=True)
        time.sleep(60)
    bus.consume(topic, group, handler, poll_timeout=0.02)
else:
    with open(out, "a") as sink:
        def handler(event):
            sink.write(event.event_id + "\n")
            sink.flush()
            time.sleep(0.005)
        bus.consume(topic, group, handler, max_idle=1.5, poll_timeout=0.02, idempotent=False)
bus.close()
"""


def _spawn(url: str, mode: str, out: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, TOPIC, GROUP, mode, str(out or "")],
        stdout=subprocess.PIPE,
        text=True,
    )


def _read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    """Next stdout line of ``proc``, failing the test instead of hanging."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            pytest.fail(f"child printed nothing within {timeout}s")
    return proc.stdout.readline().strip()


def test_message_of_a_killed_consumer_is_redelivered_after_the_lease(db_path: Path) -> None:
    lease = 0.6
    url = f"sqlite:///{db_path}?lease_seconds={lease}&poll_interval=0.01"
    with SQLiteBus(db_path, lease_seconds=lease, poll_interval=0.01) as bus:
        event = training_event(1)
        bus.publish(TOPIC, event)
        with _spawn(url, "hang") as child:
            assert _read_line(child) == "ready"
            assert _read_line(child) == f"handling {event.event_id}"
            os.kill(child.pid, signal.SIGKILL)  # dies mid-handler, before any commit
            child.wait()
            killed_at = time.monotonic()

        # Its lease still runs: no other consumer may take the message yet...
        assert bus._poll([TOPIC], GROUP, "survivor", timeout=0.1) is None
        # ...and once it runs out, the message comes back, marked as a redelivery.
        message = bus._poll([TOPIC], GROUP, "survivor", timeout=5)
        waited = time.monotonic() - killed_at
        assert message is not None
        assert message.value == encode(event)
        assert message.delivery_count == 2
        assert 0.1 < waited < lease + 1.0
        bus._commit(message)
        assert bus.pending(GROUP, TOPIC) == 0


def test_two_processes_in_one_group_never_process_a_message_twice(
    db_path: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{db_path}?poll_interval=0.01"
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    with SQLiteBus(db_path) as bus:
        children = [_spawn(url, "work", out) for out in outs]
        try:
            for child in children:
                assert _read_line(child) == "ready"
            sent = [training_event(i, key=f"station-{i % 8}") for i in range(80)]
            for event in sent:
                bus.publish(TOPIC, event)
            for child in children:
                assert child.wait(timeout=30) == 0
        finally:
            for child in children:
                child.kill()
                child.wait()
                assert child.stdout is not None
                child.stdout.close()
        handled = [out.read_text().split() for out in outs]
        assert Counter(handled[0] + handled[1]) == Counter(e.event_id for e in sent)
        assert all(handled), "both processes should have taken a share"
        assert bus.pending(GROUP, TOPIC) == 0


# ---------------------------------------------------------------------------- URLs


def test_url_paths_follow_sqlalchemy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_bus("sqlite:///.flts/bus.db?lease_seconds=2.5&poll_interval=0.02") as bus:
        assert isinstance(bus, SQLiteBus)
        assert bus.path == Path(".flts/bus.db")
        assert (bus.lease_seconds, bus.poll_interval) == (2.5, 0.02)
    assert (tmp_path / ".flts" / "bus.db").is_file()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://", "must look like"),
        ("sqlite://host/bus.db", "must look like"),
        ("sqlite:///bus.db?retention=1", "unknown URL parameters"),
        ("sqlite:///bus.db?lease_seconds=soon", "lease_seconds must be a number"),
        ("sqlite:///bus.db?lease_seconds=0", "must be > 0"),
        ("sqlite:///bus.db?synchronous=maybe", "unknown synchronous mode"),
    ],
)
def test_bad_sqlite_urls_are_configuration_errors(
    url: str, reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=reason):
        open_bus(url)
