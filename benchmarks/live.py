"""Live-operation benchmark (``make bench-live``): what the observation path accepts, what the
forecast ledger costs a replica, and how far the monitor lags behind a fleet.

1. **Gateway observations/s**: wrk against a real ``flts gateway`` (file store), every body a
   row (or a batch of rows) not stored before, for 100 identifiers; one and 100 rows a
   request.
2. **Bus path**: ``observations`` events of 10 rows on the SQLite bus, consumed by the
   observations worker's handler in this process; rows/s.
3. **Ledger overhead**: ``flts serve`` with the ledger off (``FLTS_LIVE__LEDGER_SAMPLE=0``) and
   on (every forecast), side by side with wrk at 32 connections (requests/s, p50, p99) and
   paced at 1,500 requests/s (p99).
4. **Monitor lag at 1,000 identifiers**: observations and one forecast step per row for 1,000
   stations in a file store; the seconds of the monitor's first pass (everything new), and of
   a pass after one more row and forecast per station: the lag behind a fleet reporting
   every 2 minutes. With ``--monitor-shards n`` (> 1) also shard 0 of n
   (``live.monitor_shard``) over the same fleet, the two alternating which runs first: one
   shard's share of the pass.

Medians of ``--repeats`` runs; JSON with ``--json-file``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks import harness
from benchmarks.report import write_report
from benchmarks.wrk import run_wrk
from flts.data.reader import validate_rows
from flts.data.spec import FeatureSpec
from flts.data.synthetic import synthetic_traffic
from loadtest import payloads

SPEC = FeatureSpec()


def _records(rows: int, seed: int) -> list[dict[str, Any]]:
    frame = synthetic_traffic(rows, seed=seed)
    return json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


def _pointer(store: Any, identifier: str) -> None:
    from flts.promotion import PromotionStore

    store.put_json(PromotionStore.pointer_key(identifier), {"run_id": "bench"})


def bench_gateway(work: Path, logs: Path, duration: float, repeats: int) -> dict[str, Any]:
    """Observations/s through ``POST /v1/observations`` (see module doc)."""
    from flts.storage import ObjectStore

    identifiers = [f"cell{i:03d}" for i in range(100)]
    rows = _records(4_000, seed=21)  # ~5.5 days of rows per identifier: never re-sent
    out: dict[str, Any] = {}
    for per_request in (1, 100):
        bodies = [
            orjson.dumps({"identifier": name, "rows": rows[start : start + per_request]})
            for start in range(0, len(rows), per_request)
            for name in identifiers
        ]
        runs = []
        for repeat in range(repeats):
            home = work / f"gateway-{per_request}-{repeat}"
            store = ObjectStore((home / "store").resolve().as_uri())
            for name in identifiers:
                _pointer(store, name)
            with harness.start_gateway(home, logs=logs) as gateway:
                url = f"{gateway.url}/v1/observations"
                runs.append(run_wrk(url, bodies, connections=8, duration=duration, work=logs))
        out[f"rows_per_request_{per_request}"] = {
            "requests_per_s": statistics.median(r.rps for r in runs),
            "rows_per_s": statistics.median(r.rps * per_request for r in runs),
            "p50_ms": statistics.median(r.ms("p50") for r in runs),
            "p99_ms": statistics.median(r.ms("p99") for r in runs),
            "failures": sum(r.failures for r in runs),
        }
    return out


def bench_bus(work: Path, repeats: int) -> dict[str, Any]:
    """Rows/s of ``observations`` events through the worker's handler on the SQLite bus."""
    from flts.events import OBSERVATIONS, Observations, new_event
    from flts.live.worker import ObservationsService
    from flts.services.context import ServiceContext
    from flts.settings import Settings

    rates = []
    for repeat in range(repeats):
        home = work / f"bus-{repeat}"
        context = ServiceContext(Settings(home=home))
        for i in range(20):
            _pointer(context.store, f"cell{i:02d}")
        rows = _records(500, seed=22)
        events = [
            new_event(Observations(rows=rows[start : start + 10]), identifier=f"cell{i:02d}")
            for start in range(0, len(rows), 10)
            for i in range(20)
        ]
        for event in events:
            context.bus.publish(OBSERVATIONS, event)
        service = ObservationsService(context)
        started = time.perf_counter()
        stats = context.bus.consume(service.topics, service.group, service.handle, max_idle=1.0)
        seconds = time.perf_counter() - started - 1.0  # the final idle second is not work
        assert stats.handled == len(events), stats
        rates.append(10 * len(events) / seconds)
        context.close()
    return {"events_of_10_rows": len(events), "rows_per_s": statistics.median(rates)}


def bench_ledger(
    home: Path, logs: Path, bodies: list[bytes], duration: float, repeats: int
) -> dict[str, Any]:
    """``flts serve`` with the ledger off and on, measured side by side: the two alternate
    within each repeat, so a change in the shared machine's load hits both alike."""
    labels = (("ledger_off", "0"), ("ledger_on", "1"))
    closed: dict[str, list[Any]] = {label: [] for label, _ in labels}
    paced: dict[str, list[Any]] = {label: [] for label, _ in labels}
    for _ in range(repeats):
        for label, sample in labels:
            server, _ = harness.start_flts(
                home, workers=1, logs=logs, FLTS_LIVE__LEDGER_SAMPLE=sample
            )
            with server:
                time.sleep(harness.SETTLE_SECONDS)
                url = f"{server.url}/v1/forecast"
                closed[label].append(
                    run_wrk(url, bodies, connections=32, duration=duration, work=logs)
                )
                paced[label].append(
                    run_wrk(url, bodies, connections=32, duration=duration, work=logs, rate=1500)
                )
    out: dict[str, Any] = {}
    for label, _ in labels:
        runs = closed[label]
        out[label] = {
            "rps_c32": statistics.median(r.rps for r in runs),
            "p50_ms_c32": statistics.median(r.ms("p50") for r in runs),
            "p99_ms_c32": statistics.median(r.ms("p99") for r in runs),
            "p99_ms_paced_1500": statistics.median(r.ms("p99") for r in paced[label]),
            "failures": sum(r.failures for r in runs + paced[label]),
        }
    off, on = out["ledger_off"], out["ledger_on"]
    out["rps_cost_fraction"] = 1.0 - on["rps_c32"] / off["rps_c32"]
    # One worker saturated by 32 connections: the time per forecast is its CPU per forecast.
    out["us_per_forecast"] = 1e6 / on["rps_c32"] - 1e6 / off["rps_c32"]
    return out


def bench_monitor(
    work: Path, stations: int, rows: int, repeats: int, shards: int = 1
) -> dict[str, Any]:
    """Seconds of the monitor's passes over ``stations`` stations, and of shard 0 of
    ``shards`` over the same ones when ``shards`` > 1 (see module doc)."""
    from flts.live.ledger import ForecastLedger
    from flts.live.monitor import LiveMonitor
    from flts.live.observations import ObservationLog
    from flts.shards import Shard
    from flts.storage import ObjectStore

    series = validate_rows(synthetic_traffic(rows + 2, seed=23), SPEC)
    targets = list(SPEC.targets)
    names = [f"cell{i:04d}" for i in range(stations)]
    variants = {"unsharded": Shard()}
    if shards > 1:
        variants[f"shard_0_of_{shards}"] = Shard(index=0, count=shards)
    first: dict[str, list[float]] = {label: [] for label in variants}
    incremental: dict[str, list[float]] = {label: [] for label in variants}
    for repeat in range(repeats):
        store = ObjectStore(f"file://{work / f'monitor-{repeat}'}")
        log = ObservationLog(store, SPEC)
        ledger = ForecastLedger(store, "bench")

        def serve(name: str, origin: int, ledger: ForecastLedger = ledger) -> None:
            when = series.index[origin + 1]
            values = series.loc[when, targets].to_numpy() * 1.05
            record = {"time": when.isoformat(), **dict(zip(targets, values.tolist(), strict=True))}
            model = {"identifier": name, "run_id": "r", "model_type": "RIDGE", "config_hash": "c"}
            ledger.record(orjson.dumps({"forecast": [record], "model": model}))

        for name in names:
            log.append(name, series.iloc[:rows])
            for origin in range(rows - 31, rows - 1):
                serve(name, origin)
        ledger.flush()
        # Every monitor is made before any pass: each keeps its own state (a shard's under
        # monitor/shards/), none starts from another's.
        monitors = {label: LiveMonitor(store, SPEC, shard=s) for label, s in variants.items()}
        order = list(variants) if repeat % 2 == 0 else list(reversed(variants))
        for label in order:
            started = time.perf_counter()
            report = monitors[label].run_once()
            first[label].append(time.perf_counter() - started)
            owned = sum(variants[label].owns(name) for name in names)
            assert report.scored == 30 * owned, report
        for name in names:  # one more row and one more forecast per station
            log.append(name, series.iloc[rows : rows + 1])
            serve(name, rows - 1)
        ledger.flush()
        for label in order:
            started = time.perf_counter()
            report = monitors[label].run_once()
            incremental[label].append(time.perf_counter() - started)
            assert report.scored == sum(variants[label].owns(name) for name in names), report
    out: dict[str, Any] = {
        "stations": stations,
        "first_pass_s": statistics.median(first["unsharded"]),
        "pass_after_one_row_each_s": statistics.median(incremental["unsharded"]),
        "steps_scored_first_pass": 30 * stations,
    }
    for label, shard in variants.items():
        if label == "unsharded":
            continue
        owned = sum(shard.owns(name) for name in names)
        out[label] = {
            "stations_owned": owned,
            "first_pass_s": statistics.median(first[label]),
            "pass_after_one_row_each_s": statistics.median(incremental[label]),
            "pass_fraction_of_unsharded": statistics.median(incremental[label])
            / out["pass_after_one_row_each_s"],
        }
    return out


PARTS = ("monitor", "bus", "gateway", "ledger")


def _ledger(home: Path, logs: Path, arguments: argparse.Namespace) -> dict[str, Any]:
    [run_id] = harness.ensure_models(home, arguments.data, 1, epochs=arguments.epochs)
    harness.promote(home, run_id)
    histories = payloads.windows(harness.requests_csv(arguments.data, arguments.test))
    bodies = [payloads.forecast_body(h, {}) for h in histories]
    return bench_ledger(home, logs, bodies, arguments.duration, arguments.repeats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_model_arguments(parser)
    parser.add_argument("--duration", type=float, default=8.0, help="Seconds per wrk run.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per figure (medians).")
    parser.add_argument("--stations", type=int, default=1_000, help="Monitor benchmark fleet.")
    parser.add_argument(
        "--monitor-shards",
        type=int,
        default=4,
        help="Also time shard 0 of this many monitor shards over the same fleet (1: only "
        "the unsharded monitor).",
    )
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="Run only these parts (repeatable); all by default.",
    )
    arguments = parser.parse_args(argv)
    home = harness.prepare_home(arguments.home, fresh=arguments.fresh)
    work = Path(tempfile.mkdtemp(prefix="flts-bench-live-"))
    logs = work / "logs"
    report: dict[str, Any] = {"machine": harness.machine_load()}
    parts = set(arguments.only or PARTS)
    if "monitor" in parts:
        print("monitor at", arguments.stations, "stations ...", file=sys.stderr)
        report["monitor"] = bench_monitor(
            work, arguments.stations, 60, arguments.repeats, arguments.monitor_shards
        )
    if "bus" in parts:
        print("bus path ...", file=sys.stderr)
        report["bus"] = bench_bus(work, arguments.repeats)
    if "gateway" in parts:
        print("gateway ...", file=sys.stderr)
        report["gateway"] = bench_gateway(work, logs, arguments.duration, arguments.repeats)
    if "ledger" in parts:
        print("ledger overhead ...", file=sys.stderr)
        report["ledger"] = _ledger(home, logs, arguments)
    text = json.dumps(report, indent=2)
    print(text)
    write_report(arguments.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
