"""One inference replica serving a fleet: memory, latency with a random identifier per
request, cold loads, and what promotion discovery costs the object store.

The fleet: one RIDGE and one PERSISTENCE model trained once on synthetic traffic and saved
with ``Forecaster.save``; ``--identifiers`` stations (1,000 by default) promoted through the
project's own pointer writer (:class:`~flts.promotion.PromotionStore`, which also keeps the
promotion index), alternating the two runs, on a ``file://`` object store. The replica is
``create_app`` with a file-based :class:`~flts.api.PromotionModelSource` (no MLflow: what is
measured is serving, not the tracking server), run by uvicorn with the options of
``flts serve``, as its own process (this module's ``serve`` command), so its RSS is its own.

Measured, for the replica unbounded (every champion in memory) and bounded
(``serving.max_resident_bytes`` = ``--resident-share`` of the fleet's saved bytes):

* RSS (``/proc/<pid>/status`` VmRSS) once every champion the bound allows is loaded, and
  after the load run;
* p50/p99 of ``POST /v1/forecast`` at ``--connections`` (32) with wrk; each body names a
  random identifier (``--bodies`` bodies drawn uniformly, sent round-robin by
  ``benchmarks/post.lua``). Unbounded, every answer comes from memory (the issue's
  "in-memory champions" figure); bounded, a share of the requests waits for a cold load;
* cold loads: count and p50/p99 estimated from the replica's own
  ``flts_model_cold_load_seconds`` histogram (bucket interpolation, as Prometheus'
  ``histogram_quantile``), and evictions.

Promotion discovery, in this process, on ``file://`` stores of 100 and 1,000 identifiers
(``--discovery``): a watcher over a store that counts its requests
(:class:`helpers.CountingStore`), polled as often as ``serving.pointer_poll_seconds`` (2 s)
would in a minute: requests per minute with nothing promoted, with one promotion in that
minute, the cost of one full listing (what every poll cost before the index), and that
listing amortised over ``serving.full_listing_seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import machine_load
from benchmarks.report import write_report
from benchmarks.wrk import run_wrk
from loadtest import payloads
from servers import Server, free_port, spawn

RUNS = ("ridge", "persistence")
CONFIG_HASH = "00000000f1ee7000"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLL_SECONDS = 2.0
FULL_LISTING_SECONDS = 300.0
#: Pause after settling before measuring: past the replica's trailing heap settle
#: (:class:`flts.api.heap.SettleThrottle`, 5 s after the last load), start-up work.
SETTLE_SECONDS = 6.0


def _name(number: int) -> str:
    return f"cell-{number:05d}"


# ----------------------------------------------------------------------------- the fleet


def train_models(root: Path) -> dict[str, Path]:
    """RIDGE and PERSISTENCE, trained once on synthetic traffic and saved under ``root``."""
    from flts.data import FeatureSpec, prepare, validate_frame
    from flts.data.synthetic import synthetic_traffic
    from flts.models import model_class

    spec = FeatureSpec()
    table = validate_frame(synthetic_traffic(3_000, seed=7).reset_index(drop=True), spec)
    prepared = prepare(table, spec=spec)
    dirs = {}
    for run_id in RUNS:
        model = model_class(run_id.upper())(spec, prepared.input_scaler, prepared.target_scaler)
        model.fit(prepared.train, prepared.validation)
        model.save(root / run_id)
        dirs[run_id] = root / run_id
    return dirs


def promote_fleet(store_url: str, count: int) -> float:
    """Promote ``count`` identifiers through the pointer writer; seconds it took."""
    from flts.promotion import Promotion, PromotionStore
    from flts.storage import ObjectStore

    writer = PromotionStore(ObjectStore(store_url))
    started = time.perf_counter()
    for number in range(count):
        run_id = RUNS[number % len(RUNS)]
        writer.record(
            Promotion(
                run_id=run_id,
                model_type=run_id.upper(),
                config_hash=CONFIG_HASH,
                identifier=_name(number),
                promoted_at=T0,
            )
        )
    return time.perf_counter() - started


def loader(models: Path) -> Any:
    """``run_id -> Forecaster`` from the saved directories (the fastest serving runtime)."""
    from flts.models.serving import load_serving_model

    return lambda run_id: load_serving_model(models / run_id)


# ----------------------------------------------------------------------------- the replica


def serve(root: Path, port: int) -> None:
    """The replica process: ``create_app`` over the fleet's store, settings from FLTS_*."""
    import uvicorn

    from flts.api import PromotionModelSource, create_app
    from flts.api.app import uvicorn_options
    from flts.promotion import PromotionStore
    from flts.services.context import ServiceContext
    from flts.settings import Settings

    context = ServiceContext(Settings())
    source = PromotionModelSource(PromotionStore(context.store), loader(root / "models"))
    app = create_app(context, follow_bus=False, source=source, close_context=True, manage_heap=True)
    options: Any = uvicorn_options(context.settings.serving.request_timeout)
    uvicorn.run(app, host="127.0.0.1", port=port, **options)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            return int(response.status), response.read().decode()
    except OSError:
        return 0, ""


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def histogram_quantile(text: str, name: str, share: float) -> float | None:
    """``share`` quantile of histogram ``name`` by linear interpolation inside its bucket."""
    buckets = [
        (float("inf") if bound == "+Inf" else float(bound), float(count))
        for bound, count in re.findall(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', text, re.M)
    ]
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = share * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


def _rss_mib(server: Server) -> float:
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return round(int(match.group(1)) / 1024, 1) if match else 0.0


def start_replica(root: Path, logs: Path, bound: int) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLTS_")}
    env.update(
        {
            "FLTS_HOME": str(root / "home"),
            "FLTS_STORAGE_URL": (root / "store").as_uri(),
            "FLTS_BUS_URL": f"memory://{uuid.uuid4().hex}",
            "FLTS_SERVING__MAX_RESIDENT_BYTES": str(bound),
            "FLTS_SERVING__POINTER_POLL_SECONDS": str(POLL_SECONDS),
            "FLTS_LIVE__LEDGER_SAMPLE": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    argv = [sys.executable, "-m", "benchmarks.fleet_serving", "serve"]
    argv += ["--root", str(root), "--port", str(port)]
    return spawn(
        f"fleet-replica-{bound}",
        argv,
        url=url,
        log_dir=logs,
        env=env,
        ready=lambda: _get(url + "/readyz")[0] == 200,
        timeout=300.0,
    )


def measure_replica(
    root: Path, *, count: int, bound: int, bodies: list[bytes], duration: float, connections: int
) -> dict[str, Any]:
    """One replica: settle (every champion the bound allows loaded), RSS, wrk, cold loads."""
    started = time.perf_counter()
    server = start_replica(root, root / "logs", bound)
    try:
        expected = count if bound == 0 else None
        deadline = time.monotonic() + 600
        previous, resident = -1.0, 0.0
        while time.monotonic() < deadline:  # the start-up listing has loaded what it may
            resident = _metric(_get(server.url + "/metrics")[1], "flts_models_resident")
            if resident == expected or (expected is None and resident == previous > 0):
                break
            previous = resident
            time.sleep(POLL_SECONDS)
        settled = time.perf_counter() - started
        time.sleep(SETTLE_SECONDS)
        rss_settled = _rss_mib(server)
        run = run_wrk(
            server.url + "/v1/forecast",
            bodies,
            connections=connections,
            duration=duration,
            work=root / "wrk",
        )
        metrics = _get(server.url + "/metrics")[1]
        name = "flts_model_cold_load_seconds"
        return {
            "max_resident_bytes": bound,
            "resident_after_start": int(resident),
            "start_to_settled_s": round(settled, 1),
            "rss_settled_mib": rss_settled,
            "rss_after_load_mib": _rss_mib(server),
            "resident_after_load": int(_metric(metrics, "flts_models_resident")),
            "resident_bytes_after_load": int(_metric(metrics, "flts_models_resident_bytes")),
            "requests": run.requests,
            "rps": round(run.rps, 1),
            "failures": run.errors,
            "p50_ms": run.ms("p50"),
            "p99_ms": run.ms("p99"),
            "cold_loads": int(_metric(metrics, f"{name}_count")),
            "cold_load_p50_s": _rounded(histogram_quantile(metrics, name, 0.5)),
            "cold_load_p99_s": _rounded(histogram_quantile(metrics, name, 0.99)),
            "evictions": int(_metric(metrics, "flts_model_evictions_total")),
        }
    finally:
        server.stop()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def random_bodies(count: int, bodies: int, seed: int = 1) -> list[bytes]:
    """``bodies`` forecast requests, each naming an identifier drawn uniformly."""
    histories = payloads.windows(None)
    draw = random.Random(seed)
    return [
        payloads.forecast_body(draw.choice(histories), {"identifier": _name(draw.randrange(count))})
        for _ in range(bodies)
    ]


# ----------------------------------------------------------------------------- discovery


def measure_discovery(root: Path, count: int, models: Path) -> dict[str, Any]:
    """Store requests of one replica's promotion discovery at ``count`` identifiers."""
    from flts.api import ModelHolder, PromotionModelSource
    from flts.api.watcher import ChampionWatcher
    from flts.promotion import Promotion, PromotionStore
    from flts.storage import ObjectStore
    from helpers import CountingStore

    store_url = (root / f"discovery-{count}").as_uri()
    promote_seconds = promote_fleet(store_url, count)
    counting = CountingStore(ObjectStore(store_url))
    # A bound of one byte: one champion loads, the rest are left for requests, so the
    # figures are discovery's alone, not 1,000 model loads.
    holder = ModelHolder(
        PromotionModelSource(PromotionStore(counting), loader(models)), max_resident_bytes=1
    )
    watcher = ChampionWatcher(
        holder, poll_seconds=POLL_SECONDS, full_listing_seconds=FULL_LISTING_SECONDS
    )
    watcher.poll_once()  # start-up: the full listing
    listing = len(counting.reads())
    polls = round(60 / POLL_SECONDS)
    for _ in range(polls):
        watcher.poll_once()
    quiet = len(counting.reads())
    PromotionStore(ObjectStore(store_url)).record(
        Promotion(
            run_id="persistence",
            model_type="PERSISTENCE",
            config_hash=CONFIG_HASH,
            identifier=_name(0),
            promoted_at=T0 + timedelta(minutes=1),
        )
    )
    for _ in range(polls):
        watcher.poll_once()
    one_promotion = len(counting.reads())
    return {
        "identifiers": count,
        "promote_all_s": round(promote_seconds, 1),
        "requests_per_minute_unchanged": quiet,
        "requests_per_minute_one_promotion": one_promotion,
        "full_listing_requests": listing,
        "full_listing_per_minute_amortised": round(listing * 60 / FULL_LISTING_SECONDS, 1),
        "before_index_requests_per_minute": listing * polls,
    }


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    child = commands.add_parser("serve", help="(internal) the replica process")
    child.add_argument("--root", type=Path, required=True)
    child.add_argument("--port", type=int, required=True)
    parser.add_argument("--identifiers", type=int, default=1_000)
    parser.add_argument("--duration", type=float, default=10.0, help="Seconds of each wrk run.")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--bodies", type=int, default=2_000, help="Distinct request bodies.")
    parser.add_argument(
        "--resident-share",
        type=float,
        default=0.25,
        help="The bounded replica's max_resident_bytes as a share of the fleet's saved bytes.",
    )
    parser.add_argument("--discovery", default="100,1000", help="Fleet sizes for discovery.")
    parser.add_argument("--work", type=Path, default=Path("build/bench/fleet-serving"))
    parser.add_argument(
        "--json-file", dest="json", type=Path, default=None, help="Write the report here."
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.root, args.port)
        return 0

    from flts.models.base import directory_bytes

    root = args.work.resolve()
    if root.exists():
        shutil.rmtree(root)
    (root / "logs").mkdir(parents=True)
    dirs = train_models(root / "models")
    count = args.identifiers
    promote_seconds = promote_fleet((root / "store").as_uri(), count)
    fleet_bytes = sum(directory_bytes(dirs[RUNS[n % len(RUNS)]]) for n in range(count))
    bound = max(1, int(fleet_bytes * args.resident_share))
    bodies = random_bodies(count, args.bodies)
    options = {"bodies": bodies, "duration": args.duration, "connections": args.connections}
    report: dict[str, Any] = {
        "machine": machine_load(),
        "identifiers": count,
        "model_bytes": {run: directory_bytes(path) for run, path in dirs.items()},
        "fleet_saved_bytes": fleet_bytes,
        "promote_fleet_s": round(promote_seconds, 1),
        "client": f"wrk, {args.connections} connections, {args.bodies} bodies with a "
        "uniformly random identifier each, sent round-robin",
        "unbounded": measure_replica(root, count=count, bound=0, **options),
        "bounded": measure_replica(root, count=count, bound=bound, **options),
        "discovery": [
            measure_discovery(root, int(size), root / "models")
            for size in args.discovery.split(",")
        ],
        "machine_after": machine_load(),
    }
    text = json.dumps(report, indent=2)
    print(text)
    write_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
