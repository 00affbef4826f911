"""A fleet from one upload to its champions: wall time and CPU seconds per station.

``--stations`` (1,000 by default) synthetic stations, each from
:func:`flts.data.synthetic.synthetic_traffic` with its own level, daily and weekly shape, noise
and bursts (:func:`station_shape`), two weeks of 2-minute rows (10,080) to train on and a test
day (720), written as one bulk CSV pair with an ``identifier`` column and uploaded at once
(:func:`upload_fleet`). The services run as the embedded system runs them (``flts up``): each
its own OS process (``python -m flts worker ...``, under :class:`flts.supervisor.Supervisor`),
on the SQLite bus, a ``file://`` store and MLflow on SQLite under a fresh ``FLTS_HOME``:
preprocess, ``--trainer-replicas`` trainers per model type of ``--models`` (one consumer group
per type, so the replicas of a type share its stations) and the evaluator, which waits for
every type of ``--models``. The benchmark waits until every station has a finished decision.

Measured:

* wall seconds from the first byte uploaded to the last decision, and the projection to
  ``--project`` stations (wall per station, linear: every station costs the same work);
* CPU seconds (user + system, ``/proc/<pid>/stat``) of every service process, split into
  start-up (imports, connections: until the process is idle before the upload) and work;
  the work per station, per service and in total, beside the upload's own CPU (this
  process);
* champions promoted and stations rejected (by reason code);
* with ``--profile DIR``, one cProfile file per service process (``python -m cProfile``),
  and the top functions by cumulative time of each in the report.

``--no-figures`` turns off the evaluator's forecast-vs-actual figure
(``FLTS_EVALUATION__LOG_FIGURES=false``); the report says which was measured.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from benchmarks.harness import machine_load
from benchmarks.report import write_report

#: Rows per station: two weeks of 2-minute rows to train on, and a test day.
TRAIN_ROWS = 14 * 720
TEST_ROWS = 720
IDENTIFIER_COLUMN = "identifier"
#: Seconds of near-zero CPU after which a freshly started service counts as idle.
IDLE_SECONDS = 1.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def station_name(number: int) -> str:
    return f"cell-{number:05d}"


class StationShape(TypedDict):
    """The shape arguments of :func:`~flts.data.synthetic.synthetic_traffic`."""

    level: float
    daily_amplitude: float
    peak_hour: float
    weekend_factor: float
    noise: float
    burst_every: int
    burst_scale: float


def station_shape(number: int, seed: int = 0) -> StationShape:
    """The synthetic-traffic shape of station ``number``: drawn once from its own seed, so
    the same fleet comes back on every run, and stations differ as real cells do."""
    rng = np.random.default_rng([seed, number])
    return StationShape(
        level=float(rng.lognormal(0.0, 0.5)),
        daily_amplitude=float(rng.uniform(0.25, 0.55)),
        peak_hour=float(rng.uniform(12.0, 21.0)),
        weekend_factor=float(rng.uniform(0.55, 1.05)),
        noise=float(rng.uniform(0.08, 0.25)),
        burst_every=int(rng.integers(200, 1200)),
        burst_scale=float(rng.uniform(0.3, 1.5)),
    )


def write_fleet(folder: Path, stations: int, seed: int = 0) -> tuple[Path, Path]:
    """The bulk train and test CSVs of ``stations`` stations (an ``identifier`` column first)."""
    from flts.data.synthetic import synthetic_traffic

    folder.mkdir(parents=True, exist_ok=True)
    train_csv, test_csv = folder / "fleet_train.csv", folder / "fleet_test.csv"
    for index in range(stations):
        frame = synthetic_traffic(
            TRAIN_ROWS + TEST_ROWS, seed=seed * 1_000_003 + index, **station_shape(index, seed)
        )
        frame.insert(0, IDENTIFIER_COLUMN, station_name(index))
        header = index == 0
        for path, rows in (
            (train_csv, frame.iloc[:TRAIN_ROWS]),
            (test_csv, frame.iloc[TRAIN_ROWS:]),
        ):
            with path.open("w" if header else "a") as out:
                rows.to_csv(out, header=header, index=False)
    return train_csv, test_csv


def upload_fleet(context: Any, train_csv: Path, test_csv: Path) -> dict[str, str]:
    """Upload a bulk train/test CSV pair (one ``identifier`` column, every station's rows)
    as the fleet's one bulk upload (:func:`flts.fleet.bulk.ingest_bulk_csv`, what the
    gateway's bulk route runs: split by identifier, every station validated alone, stored,
    one group manifest, announced one by one) and return each accepted identifier's
    correlation id; rejected stations raise, a benchmark fleet has none."""
    from flts.fleet.bulk import ingest_bulk_csv

    result = ingest_bulk_csv(
        context,
        train=train_csv,
        test=test_csv,
        identifier_column=IDENTIFIER_COLUMN,
        train_filename=train_csv.name,
        test_filename=test_csv.name,
    )
    if result.rejected:
        raise RuntimeError(f"stations rejected: {[r.to_json() for r in result.rejected][:5]}")
    return {event.identifier: event.correlation_id for event in result.events}


# ----------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class ServiceProcess:
    """One service process of the benchmark: its supervisor name and role."""

    name: str
    service: str
    args: list[str]


def service_processes(models: Sequence[str], replicas: int) -> list[ServiceProcess]:
    """Preprocess, ``replicas`` trainers per model type, the evaluator (``flts worker``)."""
    processes = [ServiceProcess("preprocess", "preprocess", ["worker", "preprocess"])]
    for model in models:
        for replica in range(replicas):
            processes.append(
                ServiceProcess(
                    f"train-{model.lower()}-{replica}",
                    f"train-{model.lower()}",
                    ["worker", "train", "--model", model],
                )
            )
    processes.append(ServiceProcess("evaluate", "evaluate", ["worker", "evaluate"]))
    return processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/<pid>/stat``, fields 14-15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_idle(pids: dict[str, int], timeout: float = 120.0) -> dict[str, float]:
    """Wait until no process used more than 5% of a core for ``IDLE_SECONDS`` (start-up
    done); return each one's CPU seconds then."""
    deadline = time.monotonic() + timeout
    last = {name: cpu_seconds(pid) for name, pid in pids.items()}
    while time.monotonic() < deadline:
        time.sleep(IDLE_SECONDS)
        now = {name: cpu_seconds(pid) for name, pid in pids.items()}
        busy = [n for n in now if now[n] - last[n] > 0.05 * IDLE_SECONDS]
        last = now
        if not busy:
            break
    return last


def finished_decisions(store: Any, waiting: set[str]) -> dict[str, dict[str, Any]]:
    """The finished (state ``done``) decisions among the ``waiting`` identifiers."""
    from flts.promotion.decisions import DECISIONS_ROOT

    found: dict[str, dict[str, Any]] = {}
    for key in store.list(DECISIONS_ROOT):
        parts = key.split("/")
        if len(parts) != 3 or parts[1] not in waiting or not key.endswith(".json"):
            continue
        try:
            document = store.get_json(key)
        except KeyError:
            continue
        if document.get("state") == "done":
            found[parts[1]] = document
    return found


def top_functions(path: Path, count: int = 12) -> list[dict[str, Any]]:
    """The ``count`` functions of a cProfile file with the most cumulative time."""
    stats = pstats.Stats(str(path), stream=io.StringIO())
    rows = []
    for (file, line, function), (_cc, calls, total, cumulative, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({function})",
                "calls": calls,
                "tottime": round(total, 2),
                "cumtime": round(cumulative, 2),
            }
        )
    rows.sort(key=lambda row: -row["cumtime"])
    return rows[:count]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from flts.services.context import ServiceContext
    from flts.settings import Settings
    from flts.supervisor import ProcessSpec, Supervisor

    models = [m.strip().upper() for m in args.models.split(",") if m.strip()]
    root = Path(tempfile.mkdtemp(prefix="flts-fleet-", dir=args.root))
    home = root / "home"
    started = time.perf_counter()
    train_csv, test_csv = write_fleet(root / "upload", args.stations, args.seed)
    generate_seconds = time.perf_counter() - started
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLTS_")}
    env.update(
        {
            "FLTS_HOME": str(home),
            "FLTS_BUS_URL": f"sqlite:///{home}/bus.db",
            "FLTS_STORAGE_URL": (home / "store").as_uri(),
            "FLTS_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
            "FLTS_EVALUATION__EXPECTED_MODELS": json.dumps(models),
            "FLTS_EVALUATION__LOG_FIGURES": "true" if args.figures else "false",
            # The GLOBAL candidates of a group arrive together once every member is logged,
            # long after the per-station ones: the evaluator waits for them.
            "FLTS_EVALUATION__DEADLINE_SECONDS": str(args.deadline),
            "PYTHONUNBUFFERED": "1",
        }
    )
    processes = service_processes(models, args.trainer_replicas)
    specs = []
    for process in processes:
        argv = ["-m", "flts", *process.args]
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            out = args.profile.resolve() / f"{process.name}.prof"
            argv = ["-m", "cProfile", "-o", str(out), *argv]
        specs.append(ProcessSpec(process.name, argv))
    supervisor = Supervisor(specs, log_dir=home / "logs", env=env, program=[sys.executable])
    previous = {k: os.environ.get(k) for k in env if k.startswith("FLTS_")}
    os.environ.update({k: v for k, v in env.items() if k.startswith("FLTS_")})
    context = ServiceContext(Settings())
    try:
        supervisor.start()
        pids = {name: child.process.pid for name, child in supervisor.children.items()}
        at_start = wait_idle(pids)
        upload_cpu = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        announced = upload_fleet(context, train_csv, test_csv)
        after = resource.getrusage(resource.RUSAGE_SELF)
        upload_seconds = time.perf_counter() - began
        upload_cpu_seconds = (after.ru_utime - upload_cpu.ru_utime) + (
            after.ru_stime - upload_cpu.ru_stime
        )
        waiting, decided = set(announced), {}
        deadline = time.monotonic() + args.timeout
        while waiting and time.monotonic() < deadline:
            if supervisor.gave_up:
                raise RuntimeError(f"services gave up: {supervisor.gave_up}")
            supervisor.check()
            found = finished_decisions(context.store, waiting)
            decided.update(found)
            waiting -= set(found)
            if waiting:
                time.sleep(1.0)
        wall = time.perf_counter() - began
        at_end = {name: cpu_seconds(pid) for name, pid in pids.items()}
    finally:
        supervisor.stop()
        context.close()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    count = len(decided)
    per_service: dict[str, dict[str, float]] = {}
    for process in processes:
        entry = per_service.setdefault(
            process.service, {"processes": 0, "startup_cpu_seconds": 0.0, "work_cpu_seconds": 0.0}
        )
        entry["processes"] += 1
        entry["startup_cpu_seconds"] += at_start[process.name]
        entry["work_cpu_seconds"] += at_end[process.name] - at_start[process.name]
    for entry in per_service.values():
        entry["work_cpu_seconds_per_station"] = round(entry["work_cpu_seconds"] / max(count, 1), 4)
        entry["startup_cpu_seconds"] = round(entry["startup_cpu_seconds"], 2)
        entry["work_cpu_seconds"] = round(entry["work_cpu_seconds"], 2)
    work = sum(at_end[p] - at_start[p] for p in at_end)
    champions = sum(1 for d in decided.values() if d.get("champion"))
    rejected = Counter(str(d.get("reason_code")) for d in decided.values() if not d.get("champion"))
    per_station_cpu = (work + upload_cpu_seconds) / max(count, 1)
    cores = os.cpu_count() or 1
    report: dict[str, Any] = {
        "stations": args.stations,
        "decided": count,
        "undecided": sorted(waiting)[:20],
        "models": models,
        "trainer_replicas": args.trainer_replicas,
        "figures": args.figures,
        "profiled": args.profile is not None,
        "rows_per_station": {"train": TRAIN_ROWS, "test": TEST_ROWS},
        "generate_seconds": round(generate_seconds, 1),
        "upload_seconds": round(upload_seconds, 1),
        "upload_cpu_seconds": round(upload_cpu_seconds, 2),
        "wall_seconds": round(wall, 1),
        "wall_seconds_per_station": round(wall / max(count, 1), 3),
        "cpu_seconds_per_station": round(per_station_cpu, 3),
        "services_cpu_seconds": round(work, 1),
        "services": per_service,
        "champions": champions,
        "rejected": count - champions,
        "rejected_by_reason": dict(rejected),
        "projection": {
            "stations": args.project,
            "wall_seconds": round(wall / max(count, 1) * args.project, 0),
            "cpu_seconds": round(per_station_cpu * args.project, 0),
            "cpu_bound_wall_seconds": round(per_station_cpu * args.project / cores, 0),
            "target_seconds": 1800,
        },
        "machine": machine_load(),
    }
    if args.profile is not None:
        report["profiles"] = {
            p.name: top_functions(args.profile / f"{p.name}.prof")
            for p in processes
            if (args.profile / f"{p.name}.prof").exists()
        }
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        report["root"] = str(root)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=1000, help="Stations in the fleet.")
    parser.add_argument(
        "--models",
        default="RIDGE,PERSISTENCE,GLOBAL",
        help="Model types to train (comma-separated).",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=3600.0,
        help="The evaluator's deadline for a station's expected models, in seconds.",
    )
    parser.add_argument(
        "--trainer-replicas", type=int, default=1, help="Trainer processes per model type."
    )
    parser.add_argument(
        "--no-figures",
        dest="figures",
        action="store_false",
        help="Do not draw the evaluator's forecast-vs-actual figures.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic fleet.")
    parser.add_argument("--timeout", type=float, default=7200.0, help="Seconds to wait at most.")
    parser.add_argument("--project", type=int, default=1000, help="Stations to project to.")
    parser.add_argument("--profile", type=Path, default=None, help="cProfile files go here.")
    parser.add_argument("--root", type=Path, default=None, help="Parent of the scratch home.")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch home.")
    parser.add_argument("--json-file", dest="json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.stations < 1 or args.trainer_replicas < 1:
        parser.error("--stations and --trainer-replicas must be >= 1")
    report = run(args)
    write_report(args.json, report)
    summary = {k: report[k] for k in ("stations", "decided", "wall_seconds", "champions")}
    summary["cpu_seconds_per_station"] = report["cpu_seconds_per_station"]
    summary["projected_wall_seconds"] = report["projection"]["wall_seconds"]
    print(summary)
    print({name: s["work_cpu_seconds_per_station"] for name, s in report["services"].items()})
    return 0 if not report["undecided"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
