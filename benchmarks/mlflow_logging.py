"""What logging each trained run as an MLflow Model costs the trainer, in time and bytes.

A RIDGE and an LSTM (default size, one epoch: the saved files do not depend on the epochs) are
fitted once on synthetic traffic. Each round then writes the model both ways into fresh
directories, alternating the order so machine noise hits both alike:

* **plain**: the FLTS directory alone (:meth:`Forecaster.save` and ``digests.json``), what a
  run stored before;
* **MLflow Model**: :func:`flts.models.mlflow_pyfunc.save` (MLflow's ``MLmodel``, environment
  files, signature and input example beside the same files) and ``digests.json``.

The figures per model type are medians over ``--rounds`` of the added seconds and the added
bytes, and, for context, the median of a whole :meth:`Tracker.log_training_run` (SQLite store,
local artifacts: the upload of the extra bytes is in it)::

    PYTHONPATH=src:tests python -m benchmarks.mlflow_logging --rounds 5 [--json-file out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.report import write_report
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import Forecaster, model_class
from flts.models.digests import write_digests
from flts.models.mlflow_pyfunc import save
from flts.settings import Settings
from flts.tracking import Tracker

TYPES: dict[str, dict[str, Any]] = {"RIDGE": {}, "LSTM": {"max_epochs": 1}}


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _plain(model: Forecaster, directory: Path) -> float:
    started = time.perf_counter()
    model.save(directory)
    write_digests(directory)
    return time.perf_counter() - started


def _mlflow(model: Forecaster, directory: Path, example: Any) -> float:
    started = time.perf_counter()
    save(model, directory, example=example)
    write_digests(directory)
    return time.perf_counter() - started


def measure(rounds: int) -> dict[str, Any]:
    spec = FeatureSpec()
    prepared = prepare(validate_frame(synthetic_traffic(3_000, seed=3), spec), spec=spec)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flts-bench-") as scratch:
        root = Path(scratch)
        settings = Settings(
            home=root / "home",
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            bus_url=f"memory://{uuid.uuid4().hex}",
            storage_url=f"memory://{uuid.uuid4().hex}",
        )
        tracker = Tracker(settings)
        for model_type, params in TYPES.items():
            cls = model_class(model_type)
            model = cls(spec, prepared.input_scaler, prepared.target_scaler, **params)
            model.fit(prepared.train, prepared.validation)
            # Warm both paths once (imports, first MLflow use) outside the figures.
            _mlflow(model, root / f"warm-{model_type}", prepared.validation)
            added_seconds, added_bytes, plain_bytes, logs = [], [], [], []
            for index in range(rounds):
                plain_dir = root / f"{model_type}-plain-{index}"
                mlflow_dir = root / f"{model_type}-mlflow-{index}"
                if index % 2:
                    with_mlflow = _mlflow(model, mlflow_dir, prepared.validation)
                    plain = _plain(model, plain_dir)
                else:
                    plain = _plain(model, plain_dir)
                    with_mlflow = _mlflow(model, mlflow_dir, prepared.validation)
                added_seconds.append(with_mlflow - plain)
                added_bytes.append(_size(mlflow_dir) - _size(plain_dir))
                plain_bytes.append(_size(plain_dir))
                started = time.perf_counter()
                tracker.log_training_run(
                    model,
                    identifier="bench",
                    config_hash=uuid.uuid4().hex[:16],
                    correlation_id="bench",
                    example=prepared.validation,
                )
                logs.append(time.perf_counter() - started)
            results[model_type] = {
                "rounds": rounds,
                "added_seconds_median": round(statistics.median(added_seconds), 4),
                "added_bytes_median": int(statistics.median(added_bytes)),
                "plain_bytes_median": int(statistics.median(plain_bytes)),
                "log_training_run_seconds_median": round(statistics.median(logs), 4),
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--json-file", dest="json", type=Path, default=None, help="Write the report here."
    )
    args = parser.parse_args()
    results = measure(args.rounds)
    text = json.dumps(results, indent=2, sort_keys=True)
    print(text)
    write_report(args.json, results, sort_keys=True)


if __name__ == "__main__":
    main()
