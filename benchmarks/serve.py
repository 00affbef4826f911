"""Serving benchmark: ``flts serve`` measured with wrk against a bare ASGI floor in the same
run, and against ``mlflow models serve`` on the same model.

Everything runs as in production, each in its own OS process: a champion LSTM is trained (or
reused) in a benchmark ``FLTS_HOME`` and promoted through the real path, then served by
``flts serve`` (one worker by default). The load generator is wrk (:mod:`benchmarks.wrk`): a
C program that costs the 2-core machine little, so the figures are the server's. Requests are
real windows of the test CSV (``loadtest/payloads.py``, the Locust scenarios' bodies).

Levels, each repeated ``--repeats`` times (interleaved, so drift on a shared machine hits every
server alike) and reported as medians:

* closed loop at each ``--connections`` count: requests/s and p50/p99, for FLTS and for the
  floor (:mod:`benchmarks.floor`: uvicorn with the same options reading and parsing the body
  with orjson); ``fraction_of_floor`` is FLTS's requests/s over the floor's. Each run also
  measures the server's CPU per request (``/proc``); ``cpu_fraction_of_floor``, the floor's
  CPU per request over FLTS's, is the same comparison with the cores to itself, which other
  work on a shared machine moves far less than requests/s;
* paced: ``--paced-rps`` offered over the top connection count (``post.lua``'s schedule), p99
  for FLTS and for the floor; closed-loop latency includes the queueing Little's law implies,
  the paced level is latency at a given load;
* batch: ``POST /v1/forecast/batch`` with 256 windows per request in each ``--batch-forms``
  form, windows/s;
* MLflow: the same model as an MLflow pyfunc (:mod:`benchmarks.mlflow_pyfunc`) behind
  ``mlflow models serve``, closed loop at the top connection count, the same histories.

Targets (reported, never asserted): FLTS at least 40% of the floor's requests/s, p99 at most
15 ms at 1,500 requests/s offered, at least 10x ``mlflow models serve``, batch at least 50,000
windows/s. ``--check`` fails only on failed requests or a broken run (CI).

Run from the checkout: ``PYTHONPATH=tests python -m benchmarks.serve --json-file OUT``
(``make bench-serve``; ``tests`` holds the process helpers).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    SETTLE_SECONDS,
    add_model_arguments,
    ensure_models,
    machine_load,
    model_dir,
    prepare_home,
    promote,
    requests_csv,
    start_floor,
    start_flts,
    start_mlflow,
)
from benchmarks.report import write_report
from benchmarks.wrk import WrkRun, run_wrk
from loadtest import payloads

#: Windows per request of the batch level.
BATCH_WINDOWS = 256
#: Connections of the batch level (closed loop): two keep both cores busy.
BATCH_CONNECTIONS = 2
#: Distinct batch bodies, reused round-robin.
BATCH_BODIES = 16

#: (name, target, how the figure compares): the issue's serving targets.
TARGETS = (
    ("fraction_of_floor", 0.40, ">="),
    ("paced_p99_ms", 15.0, "<="),
    ("ratio_vs_mlflow", 10.0, ">="),
    ("batch_windows_per_s", 50_000.0, ">="),
)


@dataclass
class Level:
    """One load level against one server: medians over its repeats, failures summed."""

    server: str
    mode: str
    connections: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    failures: int
    offered_rps: float | None = None
    #: The server's CPU per request (median): the figure other work on the machine moves least.
    cpu_us_per_request: float | None = None
    runs: list[dict[str, float | None]] = field(default_factory=list)

    @classmethod
    def of(
        cls, server: str, mode: str, connections: int, runs: list[WrkRun], **extra: Any
    ) -> Level:
        def median(figure: str) -> float:
            values = [run.rps if figure == "rps" else run.ms(figure) for run in runs]
            return round(statistics.median(values), 3)

        cpu = [x for run in runs if (x := run.cpu_us_per_request) is not None]

        return cls(
            server=server,
            mode=mode,
            connections=connections,
            rps=round(median("rps"), 1),
            p50_ms=median("p50"),
            p90_ms=median("p90"),
            p99_ms=median("p99"),
            requests=sum(run.requests for run in runs),
            failures=sum(run.failures for run in runs),
            cpu_us_per_request=round(statistics.median(cpu), 1) if cpu else None,
            runs=[
                {
                    "rps": round(r.rps, 1),
                    "p50_ms": r.ms("p50"),
                    "p99_ms": r.ms("p99"),
                    "cpu_us_per_request": None
                    if (c := r.cpu_us_per_request) is None
                    else round(c, 1),
                }
                for r in runs
            ],
            **extra,
        )


@dataclass
class Bodies:
    """Request bodies of every level, built once from the same windows."""

    single: list[bytes]
    mlflow: list[bytes]
    batch: dict[str, list[bytes]]

    @classmethod
    def build(cls, test_csv: Path | None, forms: list[str]) -> Bodies:
        histories = payloads.windows(test_csv)
        cycle = itertools.cycle(histories)
        batch = {
            form: [
                payloads.batch_body([next(cycle) for _ in range(BATCH_WINDOWS)], {}, form)
                for _ in range(BATCH_BODIES)
            ]
            for form in forms
        }
        return cls(
            single=[payloads.forecast_body(h, {}) for h in histories],
            mlflow=[payloads.mlflow_body(h) for h in histories],
            batch=batch,
        )


def bench_serve(
    *,
    home: Path,
    train_csv: Path | None,
    test_csv: Path | None,
    duration: float,
    repeats: int,
    connections: list[int],
    paced_rps: float,
    batch_forms: list[str],
    workers: int,
    mlflow: bool,
    epochs: int,
) -> dict[str, Any]:
    """The whole benchmark (see the module doc); returns the JSON report."""
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=home))
    logs = home / "logs"
    print("training or reusing the champion LSTM ...", flush=True)
    [run_id] = ensure_models(home, train_csv, 1, epochs=epochs)
    promote(home, run_id)
    bodies = Bodies.build(test_csv, batch_forms)
    top = max(connections)
    runs: dict[tuple[str, str, int], list[WrkRun]] = {}

    pids: dict[str, int] = {}

    def measure(
        server: str, url: str, mode: str, body: list[bytes], c: int, rate: float = 0.0
    ) -> None:
        pid = pids.get(server)
        run = run_wrk(url, body, connections=c, duration=duration, work=work, rate=rate, pid=pid)
        runs.setdefault((server, mode, c), []).append(run)
        cpu = run.cpu_us_per_request
        print(
            f"{server:6} {mode:16} c={c:<3} {run.rps:9.1f} req/s  p50 {run.ms('p50'):7.2f}  "
            f"p99 {run.ms('p99'):7.2f} ms  {run.requests} requests, {run.failures} failures"
            + ("" if cpu is None else f", {cpu:.1f} us CPU/request"),
            flush=True,
        )

    print(f"starting flts serve ({workers} worker(s)) and the floor ...", flush=True)
    flts, cold = start_flts(home, workers=workers, logs=logs)
    with flts, start_floor(logs=logs) as floor:
        print(f"flts ready in {cold:.2f} s", flush=True)
        targets = {"flts": flts.url + "/v1/forecast", "floor": floor.url + "/v1/forecast"}
        for name, spawned in (("flts", flts), ("floor", floor)):
            if spawned.process is not None:
                pids[name] = spawned.process.pid
        time.sleep(SETTLE_SECONDS)
        for _ in range(repeats):
            for c in connections:
                for server, url in targets.items():
                    measure(server, url, "closed", bodies.single, c)
            if paced_rps > 0:
                for server, url in targets.items():
                    measure(server, url, "paced", bodies.single, top, paced_rps)
            for form, batch in bodies.batch.items():
                batch_url = flts.url + "/v1/forecast/batch"
                measure("flts", batch_url, f"batch-{form}", batch, BATCH_CONNECTIONS)

    if mlflow:
        from benchmarks.mlflow_pyfunc import log_pyfunc_model

        print("logging the model as an MLflow pyfunc; starting mlflow models serve ...")
        uri = log_pyfunc_model(
            model_dir(home, run_id),
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifacts=home / "pyfunc-artifacts",
        )
        with start_mlflow(home, uri, workers=workers, logs=logs) as reference:
            for _ in range(repeats):
                measure("mlflow", reference.url + "/invocations", "closed", bodies.mlflow, top)

    levels = [
        Level.of(server, mode, c, done, offered_rps=paced_rps if mode == "paced" else None)
        for (server, mode, c), done in runs.items()
    ]
    return report(levels, cold_start=cold, paced_rps=paced_rps, top=top)


def report(levels: list[Level], *, cold_start: float, paced_rps: float, top: int) -> dict[str, Any]:
    """The JSON document: every level, the headline figures beside the floor, the targets."""

    def find(server: str, mode: str, connections: int = top) -> Level | None:
        return next(
            (x for x in levels if (x.server, x.mode, x.connections) == (server, mode, connections)),
            None,
        )

    def ratio(a: Level | None, b: Level | None) -> float | None:
        """``a``'s requests/s over ``b``'s; none unless both answered every request."""
        if a is None or b is None or a.failures or b.failures or b.rps <= 0:
            return None
        return round(a.rps / b.rps, 3)

    def cpu_ratio(a: Level | None, b: Level | None) -> float | None:
        """``a``'s CPU per request over ``b``'s: the floor's over FLTS's is the fraction of
        the floor one core would reach with the machine to itself."""
        if a is None or b is None or not a.cpu_us_per_request or not b.cpu_us_per_request:
            return None
        return round(a.cpu_us_per_request / b.cpu_us_per_request, 3)

    flts, floor, mlflow = find("flts", "closed"), find("floor", "closed"), find("mlflow", "closed")
    paced = find("flts", "paced")
    batch = {
        x.mode.removeprefix("batch-"): round(x.rps * BATCH_WINDOWS)
        for x in levels
        if x.mode.startswith("batch-") and x.failures == 0
    }
    headline: dict[str, Any] = {
        "connections": top,
        "flts_rps": flts.rps if flts else None,
        "floor_rps": floor.rps if floor else None,
        "fraction_of_floor": ratio(flts, floor),
        "flts_cpu_us_per_request": flts.cpu_us_per_request if flts else None,
        "floor_cpu_us_per_request": floor.cpu_us_per_request if floor else None,
        "cpu_fraction_of_floor": cpu_ratio(floor, flts),
        "flts_p50_ms": flts.p50_ms if flts else None,
        "flts_p99_ms": flts.p99_ms if flts else None,
        "floor_p50_ms": floor.p50_ms if floor else None,
        "floor_p99_ms": floor.p99_ms if floor else None,
        "paced_offered_rps": paced_rps if paced else None,
        "paced_p99_ms": paced.p99_ms if paced else None,
        "floor_paced_p99_ms": x.p99_ms if (x := find("floor", "paced")) else None,
        "mlflow_rps": mlflow.rps if mlflow else None,
        "ratio_vs_mlflow": round(r, 1) if (r := ratio(flts, mlflow)) else None,
        "batch_windows_per_s": max(batch.values()) if batch else None,
        "batch_windows_per_s_by_form": batch,
    }
    targets = []
    for name, target, sense in TARGETS:
        value = headline[name]
        met = None if value is None else (value >= target if sense == ">=" else value <= target)
        targets.append(
            {"figure": name, "target": f"{sense} {target:g}", "value": value, "met": met}
        )
    return {
        "load_generator": "wrk -t1 (benchmarks/post.lua)",
        "headline": headline,
        "targets": targets,
        "failures": sum(x.failures for x in levels),
        "empty_levels": [
            f"{x.server} {x.mode} c={x.connections}" for x in levels if not x.requests
        ],
        "cold_start_seconds": round(cold_start, 3),
        "levels": [asdict(x) for x in levels],
        "machine": machine_load(),
    }


def _counts(text: str) -> list[int]:
    counts = sorted({int(part) for part in text.split(",") if part.strip()})
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError("give positive connection counts, e.g. 1,8,32")
    return counts


def _forms(text: str) -> list[str]:
    forms = [part.strip() for part in text.split(",") if part.strip()]
    if unknown := set(forms) - set(payloads.BATCH_FORMS):
        raise argparse.ArgumentTypeError(f"unknown batch forms {sorted(unknown)}")
    return forms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds per level run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per level (medians).")
    parser.add_argument("--connections", type=_counts, default=[32], help="e.g. 1,8,32.")
    parser.add_argument(
        "--paced-rps", type=float, default=1500.0, help="Offered rate of the paced level (0: off)."
    )
    parser.add_argument(
        "--batch-forms", type=_forms, default=["encoded"], help="rows,windows,encoded."
    )
    parser.add_argument("--workers", type=int, default=1, help="Worker processes per server.")
    parser.add_argument("--no-mlflow", action="store_true", help="Skip mlflow models serve.")
    add_model_arguments(parser)
    parser.add_argument(
        "--check", action="store_true", help="Exit 1 on any failed request, never on speed."
    )
    args = parser.parse_args(argv)
    document = bench_serve(
        home=prepare_home(args.home, fresh=args.fresh),
        train_csv=args.data if args.data.is_file() else None,
        test_csv=requests_csv(args.data, args.test),
        duration=args.duration,
        repeats=max(1, args.repeats),
        connections=args.connections,
        paced_rps=args.paced_rps,
        batch_forms=args.batch_forms,
        workers=args.workers,
        mlflow=not args.no_mlflow,
        epochs=args.epochs,
    )
    print(json.dumps(document["headline"], indent=2))
    for target in document["targets"]:
        verdict = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        print(f"target {target['figure']} {target['target']}: {target['value']} ({verdict})")
    write_report(args.json, document)
    if args.check and (document["failures"] or document["empty_levels"]):
        print(f"error: {document['failures']} failed requests; empty: {document['empty_levels']}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
