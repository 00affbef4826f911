"""How fast the dashboard's fleet page loads with 1,000 identifiers, in headless Chromium.

Two homes are seeded through the project's own writers (promotion pointers and history with
:meth:`flts.promotion.PromotionStore.record`, retraining triggers with
:func:`flts.live.triggers.request_retrain`, and the monitor's figures document in the shape
:class:`flts.live.monitor.LiveFigure` gives it) on the file store: one with ``--identifiers``
stations, and the floor, the same page with ``--floor`` stations, measured in the same run. A
real gateway process (``flts gateway``) serves each; Debian's Chromium loads the fleet page
``--loads`` times (a new tab each time, the key already in the tab's session storage) and
the time from navigation start to the table's rows being in the page is recorded. The gateway's
fleet cache is set to 0 s, so every load assembles the fleet from the store (the worst case).
The JSON has the median and p90 of both, and the in-process cost of assembling the fleet::

    PYTHONPATH=src:tests python -m benchmarks.ui_fleet --identifiers 1000 --loads 15 \\
        --json-file build/bench/ui.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness import machine_load
from benchmarks.report import write_report
from flts.bus import open_bus
from flts.events import RetrainReason
from flts.live.monitor import FIGURES_KEY, LiveFigure
from flts.live.triggers import request_retrain
from flts.promotion import Promotion, PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.settings import Settings
from flts.storage import ObjectStore
from flts.ui.readmodels import Dashboard

MODEL_TYPES = ("RIDGE", "PERSISTENCE", "LSTM", "GRU", "ENSEMBLE")


def seed_fleet(store: ObjectStore, count: int, now: datetime | None = None) -> list[str]:
    """``count`` stations, each with a champion; every second one with live figures, every
    tenth with a drift trigger. Returns the identifiers."""
    now = now or datetime.now(UTC)
    promotions = PromotionStore(store)
    bus = open_bus(f"memory://ui-seed-{os.getpid()}-{time.monotonic_ns()}")
    names: list[str] = []
    figures: list[dict[str, Any]] = []
    try:
        for i in range(count):
            name = f"station-{i:05d}"
            run_id = f"{i:08x}" * 4
            promotion = Promotion(
                run_id=run_id,
                model_type=MODEL_TYPES[i % len(MODEL_TYPES)],
                config_hash=f"{i:064x}",
                identifier=name,
                scores={"nrmse": 0.3 + (i % 97) / 200},
                promoted_at=now - timedelta(minutes=i),
                reason="seeded",
            )
            promotions.record(promotion)
            if i % 2 == 0:
                figure = LiveFigure(
                    identifier=name,
                    run_id=run_id,
                    model_type=promotion.model_type,
                    step=1,
                    n=100 + i,
                    nrmse=0.35 + (i % 89) / 180,
                    skill=0.1,
                    mae={"down": 1.0},
                    coverage={"0.8": 0.78 + (i % 5) / 100},
                )
                figures.append(asdict(figure))
            if i % 10 == 0:
                request_retrain(
                    store,
                    bus,
                    name,
                    RetrainReason.DRIFT,
                    champion_run_id=run_id,
                    evidence={"live_ratio": 1.8},
                )
            names.append(name)
    finally:
        bus.close()
    document = {"updated_at": now.isoformat(), "figures": figures}
    store.put_atomic(FIGURES_KEY, json.dumps(document, sort_keys=True).encode())
    return names


def _gateway(home: Path, keys_file: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "FLTS_HOME": str(home),
        "FLTS_SECURITY__KEYS_FILE": str(keys_file),
        "FLTS_GATEWAY__PORT": str(port),
        "FLTS_GATEWAY__UI_FLEET_CACHE_SECONDS": "0",
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flts", "gateway"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _loads(url: str, key: str, loads: int, picture: Path | None = None) -> list[float]:
    """Seconds from navigation start to the fleet table's rows, one new tab per load;
    ``picture``: a screenshot of the last load."""
    from playwright.sync_api import sync_playwright

    from servers.browser import launch_chromium

    seconds: list[float] = []
    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 768})
            context.add_init_script(f"sessionStorage.setItem('flts-api-key', {json.dumps(key)})")
            for n in range(loads + 1):  # the first load warms the browser's cache: not counted
                page = context.new_page()
                page.goto(f"{url}/ui/#/fleet", wait_until="commit")
                page.wait_for_selector("#fleet tbody tr", timeout=30_000)
                # The page marks the moment it put the rows in (User Timing), in ms from
                # the navigation's start.
                elapsed = page.evaluate(
                    "() => performance.getEntriesByName('fleet-rendered')[0].startTime"
                )
                if n:
                    seconds.append(float(elapsed) / 1000)
                if n == loads and picture is not None:
                    picture.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(picture))
                page.close()
        finally:
            browser.close()
    return seconds


def measure(count: int, loads: int, root: Path, picture: Path | None = None) -> dict[str, Any]:
    """Seed ``count`` stations in a fresh home, serve it and load the fleet page."""
    from servers import free_port, wait_for

    home = root / f"home-{count}"
    settings = Settings(home=home)
    context = ServiceContext(settings)
    started = time.perf_counter()
    seed_fleet(context.store, count)
    seeding = time.perf_counter() - started
    board = Dashboard(context, cache_seconds=0)
    assemble = []
    for _ in range(5):
        started = time.perf_counter()
        page = board.fleet(limit=50)
        assemble.append(time.perf_counter() - started)
    assert page["total"] == count, page["total"]
    keys_file = root / f"keys-{count}.json"
    key = create_key(keys_file, "bench", ["upload"])
    port = free_port()
    process = _gateway(home, keys_file, port, root / f"gateway-{count}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/healthz").status_code == 200,
            60,
            "the gateway",
            errors=(httpx.HTTPError,),
        )
        seconds = _loads(url, key, loads, picture)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {
        "identifiers": count,
        "loads": len(seconds),
        "median_seconds": statistics.median(seconds),
        "p90_seconds": _percentile(seconds, 0.9),
        "min_seconds": min(seconds),
        "assemble_median_seconds": statistics.median(assemble),
        "seed_seconds": round(seeding, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", type=int, default=1_000)
    parser.add_argument("--floor", type=int, default=10)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--target-seconds", type=float, default=1.0)
    parser.add_argument(
        "--json-file", dest="json", type=Path, default=None, help="Write the report here."
    )
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="PNG of the fleet page at full size"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flts-bench-ui-") as tmp:
        root = Path(tmp)
        floor = measure(args.floor, args.loads, root)
        fleet = measure(args.identifiers, args.loads, root, args.screenshot)
    document = {
        "benchmark": "ui_fleet",
        "page": "/ui/#/fleet (50 rows per page, sorted by identifier, fleet cache off)",
        "measured": "navigation start to the fleet table's rows in the page, headless Chromium",
        "machine": machine_load(),
        "floor": floor,
        "fleet": fleet,
        "target_median_seconds": args.target_seconds,
        "meets_target": fleet["median_seconds"] < args.target_seconds,
    }
    text = json.dumps(document, indent=2)
    print(text)
    write_report(args.json, document)


if __name__ == "__main__":
    main()
