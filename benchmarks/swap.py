"""Swap under load: promote a second champion through the bus while Locust users keep
forecasting from ``flts serve``; no request may fail, and the new run must be served.

``swap_seconds`` runs from just before the promotion starts (pointer write, registry alias,
then ``model-selected``: the conservative start) to the first answer carrying the new run id;
the swap window of ``p99_ms_during_swap`` is from that start to one second after the first
new answer. Locust is the load client here because every answer's ``X-Model-Run-Id`` is
recorded.

Run from the checkout: ``PYTHONPATH=tests python -m benchmarks.swap [--check] [--json-file OUT]``
(``make bench-serve``).
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import (
    BENCH_EPOCHS,
    SETTLE_SECONDS,
    add_model_arguments,
    ensure_models,
    machine_load,
    prepare_home,
    promote,
    requests_csv,
    start_flts,
)
from benchmarks.locust import run_locust
from benchmarks.report import write_report


@dataclass
class SwapReport:
    requests: int
    failures: int
    requests_before: int
    requests_after: int
    p99_ms_during_swap: float
    p99_ms_before_swap: float
    swap_seconds: float
    old_run_id: str
    new_run_id: str
    machine: dict[str, Any] = field(default_factory=dict)


def bench_swap(
    *,
    home: Path,
    train_csv: Path | None,
    test_csv: Path | None,
    duration: float,
    users: int = 32,
    epochs: int = BENCH_EPOCHS,
) -> SwapReport:
    """The whole swap benchmark (see the module doc)."""
    work = Path(tempfile.mkdtemp(prefix="swap-", dir=home))
    print("training or reusing two LSTM runs ...", flush=True)
    old, new = ensure_models(home, train_csv, 2, epochs=epochs)
    promote(home, old)
    server, _ = start_flts(home, workers=1, logs=home / "logs")
    time.sleep(SETTLE_SECONDS)
    marks: dict[str, float] = {}

    def swap() -> None:
        time.sleep(duration / 3)
        marks["start"] = time.time()
        promote(home, new)

    with server:
        requests = run_locust(
            host=server.url,
            user_class="FltsUser",
            users=users,
            duration=duration,
            windows_csv=test_csv,
            work=work,
            extra=["--forecast-mix", "single"],
            during=swap,
        )
    answered = requests.start + requests.latency_ms / 1000.0
    carries_new = np.array([r == new for r in requests.run_id], dtype=bool)
    first_new = float(answered[carries_new].min()) if carries_new.any() else math.nan
    started = marks["start"]
    during = (answered >= started) & (answered <= first_new + 1.0)
    before = answered < started
    return SwapReport(
        requests=len(requests),
        failures=int((~requests.ok).sum()),
        requests_before=int(before.sum()),
        requests_after=int((~before).sum()),
        p99_ms_during_swap=requests.percentile(99, during),
        p99_ms_before_swap=requests.percentile(99, before),
        swap_seconds=round(first_new - started, 3),
        old_run_id=old,
        new_run_id=new,
        machine=machine_load(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="Seconds of load.")
    parser.add_argument("--users", type=int, default=32, help="Concurrent Locust users.")
    add_model_arguments(parser)
    parser.add_argument(
        "--check", action="store_true", help="Exit 1 on failed requests or a swap never served."
    )
    args = parser.parse_args(argv)
    report = bench_swap(
        home=prepare_home(args.home, fresh=args.fresh),
        train_csv=args.data if args.data.is_file() else None,
        test_csv=requests_csv(args.data, args.test),
        duration=args.duration,
        users=args.users,
        epochs=args.epochs,
    )
    print(
        f"{report.requests} requests ({report.requests_before} before the promotion), "
        f"{report.failures} failures; p99 {report.p99_ms_during_swap:.2f} ms during the swap "
        f"({report.p99_ms_before_swap:.2f} ms before); new run served "
        f"{report.swap_seconds:.3f} s after the promotion started"
    )
    write_report(args.json, asdict(report))
    if args.check and (report.failures or math.isnan(report.swap_seconds)):
        print("error: failed requests or the new champion never answered")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
