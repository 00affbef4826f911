"""What the standard serving protocols cost beside the native route: requests/s and latency of
``POST /v2/models/{name}/infer`` (Open Inference Protocol v2) and ``POST /invocations``
(MLflow scoring, ``dataframe_records``) against ``POST /v1/forecast`` for the same windows
(``loadtest/payloads.py``), on one ``flts serve`` worker, closed loop.

The champion, the server and the load generator are the serving benchmark's
(:mod:`benchmarks.harness`, :mod:`benchmarks.wrk`); the three routes are measured interleaved
``--repeats`` times (drift on a shared machine hits each alike) and reported as medians, with
each protocol's requests/s as a fraction of the native route's. Nothing is asserted: ``--check``
fails only on failed requests or a broken run.

Run from the checkout: ``PYTHONPATH=tests python -m benchmarks.protocols --json-file OUT``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    IDENTIFIER,
    SETTLE_SECONDS,
    add_model_arguments,
    ensure_models,
    machine_load,
    prepare_home,
    promote,
    requests_csv,
    start_flts,
)
from benchmarks.report import write_report
from benchmarks.serve import Level
from benchmarks.wrk import WrkRun, run_wrk
from loadtest import payloads

#: Route label, path and body builder of each measured route.
ROUTES = {
    "native": "/v1/forecast",
    "oip_v2": f"/v2/models/{IDENTIFIER}/infer",
    "mlflow_scoring": "/invocations",
}


def bodies(test_csv: Path | None, columns: list[str]) -> dict[str, list[bytes]]:
    """The same windows as each route's request bodies."""
    histories = payloads.windows(test_csv)
    return {
        "native": [payloads.forecast_body(h, {}) for h in histories],
        "oip_v2": [payloads.oip_body(h, columns) for h in histories],
        "mlflow_scoring": [payloads.mlflow_body(h) for h in histories],
    }


def _columns(home: Path, run_id: str) -> list[str]:
    """The champion's input order (what the v2 window's last axis follows)."""
    from benchmarks.harness import model_dir
    from flts.models import load_model

    return list(load_model(model_dir(home, run_id)).spec.inputs)


def bench_protocols(
    *,
    home: Path,
    train_csv: Path | None,
    test_csv: Path | None,
    duration: float,
    repeats: int,
    connections: int,
    epochs: int,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=home))
    print("training or reusing the champion LSTM ...", flush=True)
    [run_id] = ensure_models(home, train_csv, 1, epochs=epochs)
    promote(home, run_id)
    requests = bodies(test_csv, _columns(home, run_id))
    runs: dict[str, list[WrkRun]] = {name: [] for name in ROUTES}
    server, cold = start_flts(home, workers=1, logs=home / "logs")
    with server:
        time.sleep(SETTLE_SECONDS)
        for name, path in ROUTES.items():  # every route answers before anything is timed
            run_wrk(server.url + path, requests[name][:1], connections=1, duration=1, work=work)
        for _ in range(repeats):
            for name, path in ROUTES.items():
                run = run_wrk(
                    server.url + path,
                    requests[name],
                    connections=connections,
                    duration=duration,
                    work=work,
                )
                runs[name].append(run)
                print(
                    f"{name:15} c={connections} {run.rps:9.1f} req/s  p50 {run.ms('p50'):6.2f}  "
                    f"p99 {run.ms('p99'):6.2f} ms  {run.failures} failures",
                    flush=True,
                )
    levels = {name: Level.of(name, "closed", connections, done) for name, done in runs.items()}
    native = levels["native"]
    return {
        "load_generator": "wrk -t1 (benchmarks/post.lua)",
        "workers": 1,
        "connections": connections,
        "duration_seconds": duration,
        "repeats": repeats,
        "rows_per_window": payloads.DEFAULT_ROWS,
        "headline": {
            name: {
                "rps": level.rps,
                "p50_ms": level.p50_ms,
                "p99_ms": level.p99_ms,
                "fraction_of_native": round(level.rps / native.rps, 3) if native.rps else None,
            }
            for name, level in levels.items()
        },
        "failures": sum(level.failures for level in levels.values()),
        "cold_start_seconds": round(cold, 3),
        "levels": [asdict(level) for level in levels.values()],
        "machine": {**machine_load(), "note": "shared machine; run under nice"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="Seconds per run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per route (medians).")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections.")
    add_model_arguments(parser)
    parser.add_argument("--check", action="store_true", help="Exit 1 on any failed request.")
    args = parser.parse_args(argv)
    document = bench_protocols(
        home=prepare_home(args.home, fresh=args.fresh),
        train_csv=args.data if args.data.is_file() else None,
        test_csv=requests_csv(args.data, args.test),
        duration=args.duration,
        repeats=max(1, args.repeats),
        connections=args.connections,
        epochs=args.epochs,
    )
    print(json.dumps(document["headline"], indent=2))
    write_report(args.json, document)
    return 1 if args.check and document["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
