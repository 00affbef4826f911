"""Drive an HTTP server with wrk, the C load generator (Debian package ``wrk``).

On a 2-core machine a Python load generator competes with the server for the same cores and
ends up measuring itself; wrk costs a few microseconds per request, so what it measures is
the server. One thread, keep-alive connections, POST bodies taken round-robin from a file,
optionally paced to a constant offered rate (see ``post.lua``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The Lua script that sets method, header and body, paces, and reports JSON.
SCRIPT = Path(__file__).with_name("post.lua")
#: Marker of the line ``post.lua``'s ``done()`` prints.
MARKER = "FLTS_WRK_JSON "
#: A request not answered within this long counts as a timeout error.
TIMEOUT = "10s"


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: dict[str, int]
    latency_us: dict[str, float]
    #: CPU seconds the server process(es) used during the run (``None``: not measured).
    cpu_seconds: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """The server's CPU per answered request: unlike requests/s, barely moved by other
        work on a shared machine (which takes cores away, not CPU from each request)."""
        if self.cpu_seconds is None or self.requests == 0:
            return None
        return self.cpu_seconds / self.requests * 1e6

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def failures(self) -> int:
        """Connect, read, write errors, timeouts and answers with status >= 400."""
        return sum(self.errors.values())

    def ms(self, name: str) -> float:
        """A latency figure (``p50``, ``p99``, ``mean`` ...) in milliseconds."""
        return self.latency_us[name] / 1000.0


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise FileNotFoundError("wrk not found: apt-get install wrk (make system-deps)")
    return found


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and its direct children (the worker
    processes of ``uvicorn --workers N``), read from ``/proc``; ``None`` without it."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    try:
        entries = [entry for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            # after the parenthesised command name: state, ppid, ... utime (12th), stime
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def run_wrk(
    url: str,
    bodies: list[bytes],
    *,
    connections: int,
    duration: float,
    work: Path,
    rate: float = 0.0,
    pid: int | None = None,
) -> WrkRun:
    """POST ``bodies`` (round-robin) to ``url`` over ``connections`` for ``duration`` seconds,
    closed loop, or paced at ``rate`` requests/s when ``rate > 0``; ``pid``: the server's
    process, whose CPU time over the run is measured. Raises ``RuntimeError`` when wrk fails
    or reports nothing."""
    if not bodies or any(b"\n" in body for body in bodies):
        raise ValueError("give at least one body, each without newlines (one per line)")
    work.mkdir(parents=True, exist_ok=True)
    body_file = work / f"bodies-{uuid.uuid4().hex[:8]}.txt"
    body_file.write_bytes(b"\n".join(bodies) + b"\n")
    env = {**os.environ, "FLTS_WRK_BODIES": str(body_file)}
    if rate > 0:
        env["FLTS_WRK_RATE"] = f"{rate:g}"
    argv = [wrk_binary(), "-t1", f"-c{connections}", f"-d{duration:g}s", f"--timeout={TIMEOUT}"]
    argv += ["-s", str(SCRIPT), url]
    cpu_before = None if pid is None else process_cpu_seconds(pid)
    try:
        result = subprocess.run(
            argv, env=env, capture_output=True, text=True, check=False, timeout=duration + 60
        )
    finally:
        body_file.unlink(missing_ok=True)
    cpu_after = None if pid is None else process_cpu_seconds(pid)
    line = next((x for x in result.stdout.splitlines() if x.startswith(MARKER)), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    document: dict[str, Any] = json.loads(line.removeprefix(MARKER))
    return WrkRun(
        requests=int(document["requests"]),
        seconds=int(document["duration_us"]) / 1e6,
        errors={k: int(v) for k, v in document["errors"].items()},
        latency_us={k: float(v) for k, v in document["latency_us"].items()},
        cpu_seconds=(
            None if cpu_before is None or cpu_after is None else max(0.0, cpu_after - cpu_before)
        ),
    )
