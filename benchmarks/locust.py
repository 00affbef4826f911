"""Run the Locust scenarios (``loadtest/locustfile.py``) headless in their own process and read
back every request: the swap benchmark's load client, which needs each answer's run id.

Latency percentiles come from the locustfile's per-request log (``--request-log``: exact
float milliseconds, where Locust's own table rounds to whole milliseconds).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: The scenarios, relative to the checkout the benchmark runs from.
LOCUSTFILE = Path("loadtest/locustfile.py")


@dataclass
class Requests:
    """Per-request records of one Locust run: start (epoch s), latency ms, ok, run id."""

    start: np.ndarray
    latency_ms: np.ndarray
    ok: np.ndarray
    run_id: list[str]

    @classmethod
    def read(cls, path: Path) -> Requests:
        rows = json.loads(path.read_text()) if path.is_file() else []
        return cls(
            start=np.array([r[0] for r in rows], dtype=np.float64),
            latency_ms=np.array([r[1] for r in rows], dtype=np.float64),
            ok=np.array([bool(r[2]) for r in rows], dtype=bool),
            run_id=[str(r[3]) for r in rows],
        )

    def __len__(self) -> int:
        return len(self.start)

    def percentile(self, q: float, mask: np.ndarray | None = None) -> float:
        values = self.latency_ms if mask is None else self.latency_ms[mask]
        return round(float(np.percentile(values, q)), 3) if len(values) else math.nan


def run_locust(
    *,
    host: str,
    user_class: str,
    users: int,
    duration: float,
    windows_csv: Path | None,
    work: Path,
    extra: list[str] | None = None,
    during: Callable[[], None] | None = None,
) -> Requests:
    """One headless Locust run in its own process; ``during`` runs in this process while
    the load is on (the swap benchmark promotes from here)."""
    if not LOCUSTFILE.is_file():
        raise FileNotFoundError(f"{LOCUSTFILE} not found: run from the FLTS checkout")
    log = work / f"requests-{user_class}-{users}-{uuid.uuid4().hex[:8]}.json"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    argv += ["--headless", "-u", str(users), "-r", str(users), "-t", f"{duration:g}s"]
    argv += ["-H", host, "--only-summary", "--loglevel", "WARNING", "--stop-timeout", "5"]
    argv += ["--exit-code-on-error", "0", "--request-log", str(log)]
    if windows_csv is not None and windows_csv.is_file():
        argv += ["--windows-csv", str(windows_csv)]
    argv += [*(extra or []), user_class]
    output = work / f"{log.stem}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
        try:
            if during is not None:
                during()
            process.wait(timeout=duration + 180.0)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if process.returncode != 0 or not log.is_file():
        raise RuntimeError(
            f"locust failed ({process.returncode}):\n{output.read_text(errors='replace')[-3000:]}"
        )
    return Requests.read(log)
