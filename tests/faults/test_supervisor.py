"""The supervisor behind ``flts up`` against real child processes that crash: a crash loop is
given up on after ``max_restarts``, a child that stays up long enough gets its restart
budget back, and ``flts up`` exits non-zero once it gives up on a service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.supervisor import ProcessSpec, Supervisor
from servers import free_port

#: A child that records each start in a file, lives ``argv[2]`` seconds, then crashes.
CRASHER = """
import sys, time
with open(sys.argv[1], "a") as starts:
    starts.write("start\\n")
time.sleep(float(sys.argv[2]))
sys.exit(3)
"""


FLTS_UP = [sys.executable, "-m", "flts", "up"]


def crasher(
    tmp_path: Path, uptime: float, *, max_restarts: int, healthy_after: float
) -> tuple[Supervisor, Path]:
    """A supervisor of one :data:`CRASHER` child; the file counts its starts."""
    starts = tmp_path / "starts.txt"
    supervisor = Supervisor(
        [ProcessSpec("crasher", [str(starts), str(uptime)])],
        log_dir=tmp_path / "logs",
        program=[sys.executable, "-c", CRASHER],
        restart_delay=0.05,
        max_restarts=max_restarts,
        healthy_after=healthy_after,
    )
    return supervisor, starts


def supervise(supervisor: Supervisor, seconds: float, until_starts: int, starts: Path) -> None:
    """Call ``check`` the way ``flts up`` does (more often) until the child has started
    ``until_starts`` times, the supervisor gave up, or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not supervisor.gave_up:
        supervisor.check()
        if starts.exists() and len(starts.read_text().split()) >= until_starts:
            return
        time.sleep(0.02)


@pytest.fixture
def stopped() -> Iterator[list[Supervisor]]:
    """Supervisors a test started, stopped at its end whatever happened."""
    started: list[Supervisor] = []
    yield started
    for supervisor in started:
        supervisor.stop(grace=2)


def test_a_crash_loop_is_given_up_on_after_max_restarts(
    tmp_path: Path, stopped: list[Supervisor]
) -> None:
    supervisor, starts = crasher(tmp_path, 0.0, max_restarts=2, healthy_after=30.0)
    stopped.append(supervisor)
    supervisor.start()
    supervise(supervisor, 20, until_starts=99, starts=starts)
    assert supervisor.gave_up == ["crasher"]
    assert len(starts.read_text().split()) == 3  # the first start and two restarts
    messages = supervisor.check()  # the verdict stays, and is not repeated every check
    assert messages == []
    assert supervisor.gave_up == ["crasher"]


def test_a_child_that_stays_up_gets_its_restart_budget_back(
    tmp_path: Path, stopped: list[Supervisor]
) -> None:
    """One restart allowed, yet the child is restarted again and again: each run lasted
    longer than ``healthy_after``, so each crash is a first one. Without the decay the
    supervisor gives up at the second crash."""
    supervisor, starts = crasher(tmp_path, 0.6, max_restarts=1, healthy_after=0.3)
    stopped.append(supervisor)
    supervisor.start()
    supervise(supervisor, 20, until_starts=4, starts=starts)
    assert supervisor.gave_up == []
    assert len(starts.read_text().split()) == 4
    child = supervisor.children["crasher"]
    assert child.restarts == 1  # a crash after a healthy run is a first crash again...
    time.sleep(0.35)
    supervisor.check()
    assert supervisor.children["crasher"].restarts == 0  # ...then reset while it runs


def test_flts_up_exits_non_zero_when_it_gives_up(tmp_path: Path) -> None:
    """Every worker dies at start-up (its metrics port is taken); the gateway is fine, the
    upload goes through, and ``flts up`` must end with status 1 instead of serving on
    without its workers."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            **os.environ,
            "FLTS_HOME": str(tmp_path / "home"),
            "FLTS_GATEWAY__HOST": "127.0.0.1",
            "FLTS_GATEWAY__PORT": str(free_port()),
            "FLTS_SERVING__HOST": "127.0.0.1",
            "FLTS_SERVING__PORT": str(free_port()),
            "FLTS_WORKER__METRICS_HOST": "127.0.0.1",
            "FLTS_WORKER__METRICS_PORT": str(taken.getsockname()[1]),
        }
        started = time.monotonic()
        try:
            done = subprocess.run(
                [*FLTS_UP, "--models", "PERSISTENCE", "--max-restarts", "0"],
                env=env,
                capture_output=True,
                text=True,
                timeout=90,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"flts up kept running with its workers down: {exc.stderr!r}")
    assert done.returncode == 1, done.stderr
    assert "gave up on" in done.stderr
    assert "all processes stopped" in done.stderr
    assert time.monotonic() - started < 90
    assert (tmp_path / "home" / "logs" / "preprocess.log").read_text().count("in use") >= 1
