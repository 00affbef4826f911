"""How long the GLOBAL model type takes to train one network over a fleet of stations.

Each of ``--stations`` (1,000) synthetic stations has ``--rows`` (10,080: a week of 2-minute
rows) of traffic with its own volume (seeded, so a run is reproducible); each is prepared
with the default recipe (its own train-split scalers) when :func:`flts.models.global_mlp.
fit_group` asks for it, and dropped after its windows are sampled, as the GLOBAL trainer
reads processed data one member at a time. Reported: the seconds of building the stations'
data (the stand-in for reading processed data), of training the shared network (pooled,
capped sample, early stopping), and of handing out and calibrating one member's forecaster,
plus the epochs and pooled windows. Run with ``nice`` on a shared machine::

    PYTHONPATH=src python -m benchmarks.global_fleet --stations 1000 --json-file out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from flts.data import FeatureSpec, PreparedData, split, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models.global_mlp import fit_group


def station(index: int, rows: int) -> PreparedData:
    """Station ``index``: synthetic traffic scaled by a station-specific volume."""
    spec = FeatureSpec()
    frame = synthetic_traffic(rows, seed=index)
    numeric = [c for c in frame.columns if c != spec.time_column]
    frame[numeric] = frame[numeric] * (0.2 + (index % 17) / 4)
    return split(validate_frame(frame, spec), spec=spec).windows()


def run(stations: int, rows: int, threads: int) -> dict[str, Any]:
    built = [0.0]

    def loader(index: int) -> Any:
        def load() -> PreparedData:
            started = time.perf_counter()
            data = station(index, rows)
            built[0] += time.perf_counter() - started
            return data

        return load

    members = {f"station-{i:04d}": loader(i) for i in range(stations)}
    started, cpu = time.perf_counter(), time.process_time()
    fit = fit_group(members, params={"threads": threads}, seed=0)
    total, cpu = time.perf_counter() - started, time.process_time() - cpu
    first = sorted(members)[0]
    prepared = members[first]()
    started = time.perf_counter()
    fit.forecaster(first, prepared)
    member_seconds = time.perf_counter() - started
    return {
        "stations": stations,
        "rows_per_station": rows,
        "threads": threads,
        "cpus": os.cpu_count(),
        "fit_group_seconds": round(total, 1),
        "fit_group_cpu_seconds": round(cpu, 1),
        "load_average": os.getloadavg()[0],
        "data_build_seconds": round(built[0], 1),
        "training_seconds": round(total - built[0], 1),
        "member_forecaster_seconds": round(member_seconds, 3),
        "epochs_run": fit.metadata["epochs_run"],
        "best_epoch": fit.metadata["best_epoch"],
        "pooled_train_windows": fit.metadata["pooled_train_windows"],
        "best_validation_nrmse": fit.metadata["best_validation_nrmse"],
        "parameters": fit.metadata["parameters"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=10_080)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-file", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.stations, args.rows, args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_file is not None:
        args.json_file.write_text(text + "\n")


if __name__ == "__main__":
    main()
