"""Accuracy benchmark (``flts benchmark accuracy``): every model type, every station, several
seeds, the published protocol.

It calls exactly what the pipeline calls (``read_traffic_csv``, ``prepare``, the registered
forecasters, ``evaluation.score``), so its figures are the pipeline's figures. Each station is
a pair ``<name>.csv`` (training) and ``<name>_test.csv`` (held-out test) in one directory.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flts.data import FeatureSpec, PreparedData, Recipe, prepare, read_traffic_csv
from flts.evaluation import score
from flts.exceptions import ConfigurationError
from flts.models import model_class

#: Clip percentiles per station in the published protocol (Perifanis et al. 2023).
PUBLISHED_CLIP_PERCENTILES: dict[str, tuple[float, float]] = {
    "PobleSec": (5.0, 95.0),
    "ElBorn": (10.0, 90.0),
    "LesCorts": (10.0, 90.0),
}
DEFAULT_STATIONS = ("PobleSec", "ElBorn", "LesCorts")
DEFAULT_MODELS = (
    "PERSISTENCE",
    "SEASONAL_NAIVE",
    "RIDGE",
    "PROPHET",
    "LSTM",
    "GRU",
    "MLP",
    "ENSEMBLE",
)
#: Headline figures summarised over seeds.
SUMMARY_FIELDS = ("nrmse", "mae5", "rmse5", "train_seconds")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Station:
    name: str
    train_csv: Path
    test_csv: Path


def find_stations(data_dir: Path, names: Sequence[str]) -> list[Station]:
    """Resolve station names to their CSV pair, failing early with every missing file."""
    stations, missing = [], []
    for name in names:
        train, test = data_dir / f"{name}.csv", data_dir / f"{name}_test.csv"
        missing += [str(p) for p in (train, test) if not p.is_file()]
        stations.append(Station(name, train, test))
    if missing:
        raise ConfigurationError(f"benchmark data not found: {', '.join(missing)}")
    return stations


def recipe_for(station: str, base: Recipe | None = None) -> Recipe:
    """The published recipe for a known station; ``base`` (default recipe) otherwise."""
    base = base or Recipe()
    percentiles = PUBLISHED_CLIP_PERCENTILES.get(station)
    return (
        base if percentiles is None else base.model_copy(update={"clip_percentiles": percentiles})
    )


def evaluate_model(
    prepared: PreparedData, model_type: str, seed: int, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fit one model on train/validation and score it on the test windows."""
    assert prepared.test is not None
    cls = model_class(model_type)
    model = cls(
        prepared.spec, prepared.input_scaler, prepared.target_scaler, seed=seed, **(params or {})
    )
    model.fit(prepared.train, prepared.validation)
    started = time.perf_counter()
    prediction = model.predict(prepared.test)
    predict_seconds = time.perf_counter() - started
    scores = score(prepared.test.targets, prediction, prepared.spec.targets)
    return {
        "model": model.model_type,
        "seed": seed,
        "nrmse": scores.nrmse,
        "mae5": scores.mae5,
        "rmse5": scores.rmse5,
        "per_target": {k: v.model_dump() for k, v in scores.per_target.items()},
        "train_seconds": model.metadata["train_seconds"],
        "predict_seconds": round(predict_seconds, 4),
        "test_windows": scores.n_windows,
        "metadata": {k: v for k, v in model.metadata.items() if k != "alpha_search"},
    }


def _summarise(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for group_key, members in groups.items():
        entry: dict[str, Any] = dict(zip(keys, group_key, strict=True))
        entry["runs"] = len(members)
        for name in SUMMARY_FIELDS:
            values = [m[name] for m in members]
            entry[f"{name}_mean"] = statistics.fmean(values)
            entry[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            if name == "train_seconds":
                entry["train_seconds_median"] = statistics.median(values)
        summary.append(entry)
    return summary


def station_means(summary: list[dict[str, Any]], stations: Sequence[str]) -> list[dict[str, Any]]:
    """Per model: the mean over stations of each station's seed-mean (only for models run on
    every station), and the std over seeds of the per-seed cross-station mean."""
    by_model: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in summary:
        by_model.setdefault(entry["model"], {})[entry["station"]] = entry
    out = []
    for model, per_station in by_model.items():
        if set(per_station) != set(stations):
            continue
        out.append(
            {
                "model": model,
                "stations": list(stations),
                "nrmse_mean": statistics.fmean(per_station[s]["nrmse_mean"] for s in stations),
                "mae5_mean": statistics.fmean(per_station[s]["mae5_mean"] for s in stations),
                "rmse5_mean": statistics.fmean(per_station[s]["rmse5_mean"] for s in stations),
            }
        )
    return sorted(out, key=lambda e: e["nrmse_mean"])


def run_accuracy_benchmark(
    data_dir: Path,
    *,
    stations: Sequence[str] = DEFAULT_STATIONS,
    models: Sequence[str] = DEFAULT_MODELS,
    seeds: int = 5,
    spec: FeatureSpec | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (protocol, results, summary)."""
    if seeds < 1:
        raise ConfigurationError("seeds must be at least 1")
    say = progress or (lambda _msg: None)
    for model_type in models:
        model_class(model_type)  # fail before hours of training on a missing extra
    spec = spec or FeatureSpec()
    resolved = find_stations(data_dir, stations)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    protocol_recipes = {}
    for station in resolved:
        recipe = recipe_for(station.name)
        protocol_recipes[station.name] = recipe.model_dump(mode="json")
        prepared = prepare(
            read_traffic_csv(station.train_csv, spec),
            read_traffic_csv(station.test_csv, spec),
            spec=spec,
            recipe=recipe,
        )
        say(
            f"{station.name}: {len(prepared.train)} train, {len(prepared.validation)} "
            f"validation, {len(prepared.test or [])} test windows"
        )
        for model_type in models:
            for seed in range(seeds):
                row = {"station": station.name, **evaluate_model(prepared, model_type, seed)}
                results.append(row)
                say(
                    f"  {row['model']:<15} seed {seed}: NRMSE {row['nrmse']:.4f}  "
                    f"train {row['train_seconds']:.1f}s"
                )
    summary = _summarise(results, ("station", "model"))
    return {
        "protocol": {
            "task": "lags -> next horizon rows of targets, one model per station",
            "feature_spec": spec.model_dump(mode="json"),
            "recipes": protocol_recipes,
            "seeds": list(range(seeds)),
            "metrics": "original units, negatives clipped to 0; NRMSE = mean over {down, up} "
            "of RMSE_k / mean(y_k); MAE5/RMSE5 = uniform mean over targets",
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "seconds": round(time.perf_counter() - started, 2),
        },
        "results": results,
        "summary": summary,
        "station_mean": station_means(summary, [s.name for s in resolved]),
    }
