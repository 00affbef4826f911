"""How long ``flts --help`` and ``flts status --help`` take, beside the floor of starting the
same Python interpreter (``python -c pass``) measured in the same run.

Each command runs ``--runs`` times as its own process (``python -m flts ...`` with this
checkout's ``src`` first on the path); the report has the median wall time of each, the
median CPU time (user + system, from the children's resource usage: what the command costs
whatever else the machine is doing) and the overhead above the floor. hyperfine (Debian's
package) does the timing when it is installed, plain subprocess timing otherwise; the CPU
figures always come from subprocess runs.

Run from the checkout: ``python -m benchmarks.cli_startup --runs 15 --json-file OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.report import write_report

#: What is timed; the floor first.
COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "flts --help": ["-m", "flts", "--help"],
    "flts status --help": ["-m", "flts", "status", "--help"],
}
#: The target: a user waits less than this for the help.
TARGET_SECONDS = 0.5


#: This checkout's sources (``make bench-cli`` runs from its root), timed unless ``--src``
#: names another (an older checkout).
SOURCES = Path("src")


def _environment(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    path = [str(src.resolve()), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path).rstrip(os.pathsep)
    env["COLUMNS"] = "100"  # help layout independent of the terminal running the benchmark
    return env


def _subprocess_runs(argv: list[str], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall and CPU seconds of ``runs`` runs (after one warm-up run)."""
    command = [sys.executable, *argv]
    subprocess.run(command, env=env, capture_output=True, check=True)  # warm the file cache
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return {"median_s": statistics.median(walls), "median_cpu_s": statistics.median(cpus)}


def _hyperfine_medians(runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall seconds per command from hyperfine (one warm-up run each)."""
    hyperfine = shutil.which("hyperfine")
    assert hyperfine is not None
    with tempfile.TemporaryDirectory() as scratch:
        export = Path(scratch) / "hyperfine.json"
        names = list(COMMANDS)
        shell_commands = [
            " ".join([sys.executable, *(f"'{a}'" if " " in a else a for a in COMMANDS[n])])
            for n in names
        ]
        subprocess.run(
            [
                hyperfine,
                "--warmup",
                "1",
                "--runs",
                str(runs),
                "--shell",
                "none",
                "--style",
                "none",
                "--export-json",
                str(export),
                *shell_commands,
            ],
            env=env,
            check=True,
            capture_output=True,
        )
        results = json.loads(export.read_text())["results"]
    return {name: float(result["median"]) for name, result in zip(names, results, strict=True)}


def measure(runs: int, *, use_hyperfine: bool = True, src: Path = SOURCES) -> dict[str, Any]:
    env = _environment(src)
    timings = {name: _subprocess_runs(argv, runs, env) for name, argv in COMMANDS.items()}
    tool = "subprocess"
    if use_hyperfine and shutil.which("hyperfine"):
        for name, median in _hyperfine_medians(runs, env).items():
            timings[name]["median_s"] = median
        tool = "hyperfine"
    floor = timings["python -c pass"]
    report: dict[str, Any] = {
        "runs": runs,
        "timer": tool,
        "python": sys.version.split()[0],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "target_s": TARGET_SECONDS,
        "commands": {},
    }
    for name, figures in timings.items():
        entry = {key: round(value, 4) for key, value in figures.items()}
        if name != "python -c pass":
            entry["over_floor_s"] = round(figures["median_s"] - floor["median_s"], 4)
            entry["over_floor_cpu_s"] = round(figures["median_cpu_s"] - floor["median_cpu_s"], 4)
            entry["under_target"] = figures["median_s"] < TARGET_SECONDS
        report["commands"][name] = entry
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="Runs per command (median).")
    parser.add_argument(
        "--no-hyperfine", action="store_true", help="Time with subprocess even if installed."
    )
    parser.add_argument("--src", type=Path, default=SOURCES, help="The flts sources to time.")
    parser.add_argument("--json-file", type=Path, default=None, help="Write the report here.")
    args = parser.parse_args(argv)
    report = measure(args.runs, use_hyperfine=not args.no_hyperfine, src=args.src)
    text = json.dumps(report, indent=2)
    print(text)
    write_report(args.json_file, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
