"""Accuracy benchmark (``flts benchmark accuracy``): every model type, every station, several
seeds, the published protocol.

It calls exactly what the pipeline calls (``read_traffic_csv``, ``prepare``, the registered
forecasters and their interval calibrations, ``evaluation.score`` with the persistence
forecast as the MASE reference), so its figures are the evaluator's figures. Each station is
a pair ``<name>.csv`` (training) and ``<name>_test.csv`` (held-out test) in one directory.

The GLOBAL model type is the paper's *centralized* setting: one network trained on every
station's windows together (:func:`flts.models.global_mlp.fit_group`, each station scaled by
its own training split), scored per station on that station's test file like every other
model. Its rows' ``train_seconds`` is the one shared training.

Each horizon ``h`` is its own task (``FeatureSpec(horizon=h)``, direct multi-output): every
model is trained for it, and a result row reports the figures at its last step ``h`` (how far
ahead an operator acts), with every step in ``per_step``. The default is the published
one-step task.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from flts.data import FeatureSpec, PreparedData, Recipe, prepare, read_traffic_csv
from flts.evaluation import score
from flts.exceptions import ConfigurationError
from flts.models import Forecaster, model_class
from flts.models.baselines import Persistence
from flts.models.intervals import check_levels

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
    "GLOBAL",
)
#: Model types trained once across every station of the run (a group), not per station.
GROUP_MODELS = frozenset({"GLOBAL"})
#: Figures summarised over seeds (mean and std), and those keyed by interval level (mean).
SUMMARY_FIELDS = ("nrmse", "mae5", "rmse5", "mase", "wql", "train_seconds")
LEVEL_FIELDS = ("coverage", "width")
#: Interval levels scored unless told otherwise.
DEFAULT_LEVELS = (80.0, 95.0)

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


def persistence_forecast(prepared: PreparedData) -> np.ndarray:
    """Persistence on the test windows: the reference of every model's MASE."""
    assert prepared.test is not None
    baseline = Persistence(prepared.spec, prepared.input_scaler, prepared.target_scaler)
    return baseline.fit(prepared.train, prepared.validation).predict(prepared.test)


def evaluate_model(
    prepared: PreparedData,
    model_type: str,
    seed: int,
    params: dict[str, Any] | None = None,
    *,
    naive: np.ndarray | None = None,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
) -> dict[str, Any]:
    """Fit one model on train/validation and score it (and its ``levels`` % intervals) on the
    test windows, against the persistence forecast ``naive`` for MASE."""
    cls = model_class(model_type)
    model = cls(
        prepared.spec, prepared.input_scaler, prepared.target_scaler, seed=seed, **(params or {})
    )
    model.fit(prepared.train, prepared.validation)
    return score_model(model, prepared, seed, naive=naive, levels=levels)


def evaluate_group(
    prepared: dict[str, PreparedData],
    seed: int,
    params: dict[str, Any] | None = None,
    *,
    naive: dict[str, np.ndarray],
    levels: tuple[float, ...] = DEFAULT_LEVELS,
) -> dict[str, dict[str, Any]]:
    """Fit one GLOBAL network over every station of ``prepared`` and score each station's
    forecaster on its own test windows; rows by station."""
    from flts.models.global_mlp import fit_group, in_memory

    fit = fit_group({name: in_memory(p) for name, p in prepared.items()}, params=params, seed=seed)
    return {
        name: score_model(fit.forecaster(name, data), data, seed, naive=naive[name], levels=levels)
        for name, data in prepared.items()
    }


def score_model(
    model: Forecaster,
    prepared: PreparedData,
    seed: int,
    *,
    naive: np.ndarray | None = None,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
) -> dict[str, Any]:
    """Score a fitted model (and its ``levels`` % intervals) on the test windows once."""
    assert prepared.test is not None
    started = time.perf_counter()
    prediction = model.predict(prepared.test)
    predict_seconds = time.perf_counter() - started
    bands = model.intervals(prepared.test, prediction, levels) if levels else {}
    scores = score(
        prepared.test.targets, prediction, prepared.spec.targets, baseline=naive, bands=bands
    )
    last = scores.per_step[-1]
    return {
        "model": model.model_type,
        "seed": seed,
        "horizon": prepared.spec.horizon,
        "nrmse": last.nrmse,
        "mae5": last.mae5,
        "rmse5": last.rmse5,
        "mase": last.mase,
        "wql": last.wql,
        "coverage": last.coverage,
        "width": last.width,
        "per_target": {k: v.model_dump() for k, v in last.per_target.items()},
        "per_step": [step.model_dump(exclude={"per_target"}) for step in scores.per_step],
        "train_seconds": model.metadata["train_seconds"],
        "predict_seconds": round(predict_seconds, 4),
        "test_windows": scores.n_windows,
        "metadata": {k: v for k, v in model.metadata.items() if k != "alpha_search"},
    }


def _mean_fields(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Means of every summary figure and per-level map over ``members`` (a figure missing
    from any member, e.g. wQL without intervals, is left out)."""
    entry: dict[str, Any] = {}
    for name in SUMMARY_FIELDS:
        values = [m[name] for m in members if m.get(name) is not None]
        if len(values) == len(members):
            entry[f"{name}_mean"] = statistics.fmean(values)
    for name in LEVEL_FIELDS:
        keys = members[0].get(name, {}).keys()
        entry[f"{name}_mean"] = {k: statistics.fmean(m[name][k] for m in members) for k in keys}
    return entry


def _summarise(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for group_key, members in groups.items():
        entry: dict[str, Any] = dict(zip(keys, group_key, strict=True))
        entry["runs"] = len(members)
        entry.update(_mean_fields(members))
        for name in SUMMARY_FIELDS:
            values = [m[name] for m in members if m.get(name) is not None]
            if f"{name}_mean" in entry:
                entry[f"{name}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        entry["train_seconds_median"] = statistics.median(m["train_seconds"] for m in members)
        summary.append(entry)
    return summary


def station_means(summary: list[dict[str, Any]], stations: Sequence[str]) -> list[dict[str, Any]]:
    """Per model and horizon: the mean over stations of each station's seed-means (only for
    models run on every station)."""
    groups: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for entry in summary:
        groups.setdefault((entry["model"], entry["horizon"]), {})[entry["station"]] = entry
    out = []
    for (model, horizon), per_station in groups.items():
        if set(per_station) != set(stations):
            continue
        # The station rows' seed-means, renamed back so one averaging serves both levels.
        rows = [
            {
                **{f: per_station[s].get(f"{f}_mean") for f in SUMMARY_FIELDS},
                **{f: per_station[s][f"{f}_mean"] for f in LEVEL_FIELDS},
            }
            for s in stations
        ]
        means = _mean_fields(rows)
        means.pop("train_seconds_mean", None)
        out.append({"model": model, "horizon": horizon, "stations": list(stations), **means})
    return sorted(out, key=lambda e: (e["horizon"], e["nrmse_mean"]))


def _task_specs(spec: FeatureSpec, horizons: Sequence[int] | None) -> list[FeatureSpec]:
    """One feature spec per horizon (the given spec's own horizon when none are given)."""
    if horizons is None:
        return [spec]
    if not horizons or len(set(horizons)) != len(horizons):
        raise ConfigurationError(f"horizons must be distinct and not empty, got {horizons}")
    try:
        return [spec.for_task(horizon=h) for h in horizons]
    except ValidationError as exc:
        raise ConfigurationError(f"invalid horizon: {exc.errors()[0]['msg']}") from exc


def run_accuracy_benchmark(
    data_dir: Path,
    *,
    stations: Sequence[str] = DEFAULT_STATIONS,
    models: Sequence[str] = DEFAULT_MODELS,
    seeds: int = 5,
    spec: FeatureSpec | None = None,
    horizons: Sequence[int] | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    progress: Progress | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the JSON document (protocol, results, summary); each of
    ``horizons`` (default: ``spec``'s own) is trained and scored as its own task.
    ``progress`` gets a line per step, ``on_result`` each scored (model, seed) row."""
    if seeds < 1:
        raise ConfigurationError("seeds must be at least 1")
    say = progress or (lambda _msg: None)
    for model_type in models:
        model_class(model_type)  # fail before hours of training on a missing extra
    levels = check_levels(levels)
    specs = _task_specs(spec or FeatureSpec(), horizons)
    resolved = find_stations(data_dir, stations)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    protocol_recipes = {}
    data: dict[tuple[str, int], PreparedData] = {}
    naives: dict[tuple[str, int], np.ndarray] = {}

    def record(station: str, row: dict[str, Any], horizon: int) -> None:
        results.append({"station": station, **row})
        if on_result is not None:
            on_result(results[-1])
        say(
            f"  {station:<10} {row['model']:<15} seed {row['seed']}: NRMSE at step {horizon} "
            f"{row['nrmse']:.4f}  train {row['train_seconds']:.1f}s"
        )

    for station in resolved:
        recipe = recipe_for(station.name)
        protocol_recipes[station.name] = recipe.model_dump(mode="json")
        for task in specs:
            prepared = prepare(
                read_traffic_csv(station.train_csv, task),
                read_traffic_csv(station.test_csv, task),
                spec=task,
                recipe=recipe,
            )
            naive = persistence_forecast(prepared)
            if set(models) & GROUP_MODELS:  # kept for the group's training below
                data[station.name, task.horizon] = prepared
                naives[station.name, task.horizon] = naive
            say(
                f"{station.name}, horizon {task.horizon}: {len(prepared.train)} train, "
                f"{len(prepared.validation)} validation, {len(prepared.test or [])} test windows"
            )
            for model_type in models:
                if model_type.upper() in GROUP_MODELS:
                    continue
                for seed in range(seeds):
                    row = evaluate_model(prepared, model_type, seed, naive=naive, levels=levels)
                    record(station.name, row, task.horizon)
    if {m.upper() for m in models} & GROUP_MODELS:
        names = [s.name for s in resolved]
        for task in specs:
            say(f"GLOBAL over {', '.join(names)}, horizon {task.horizon}")
            for seed in range(seeds):
                rows = evaluate_group(
                    {n: data[n, task.horizon] for n in names},
                    seed,
                    naive={n: naives[n, task.horizon] for n in names},
                    levels=levels,
                )
                for name in names:
                    record(name, rows[name], task.horizon)
    summary = _summarise(results, ("station", "model", "horizon"))
    return {
        "protocol": {
            "task": "lags -> next horizon rows of targets, one model per station and horizon "
            "(GLOBAL: one model per horizon across every station)",
            "feature_spec": specs[0].model_dump(mode="json"),
            "horizons": [task.horizon for task in specs],
            "interval_levels": list(levels),
            "recipes": protocol_recipes,
            "seeds": list(range(seeds)),
            "metrics": "original units, negatives clipped to 0, at the last step of each "
            "horizon (per_step: every step); NRMSE = mean over {down, up} of RMSE_k / "
            "mean(y_k); MAE5/RMSE5 = uniform mean over targets; MASE = MAE / MAE of "
            "persistence, wQL = mean over the intervals' quantiles and the median of "
            "2 sum pinball / sum |y|, coverage = share inside, each a uniform mean over "
            "targets; width = mean width / mean(y_k), uniform mean over targets",
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "seconds": round(time.perf_counter() - started, 2),
        },
        "results": results,
        "summary": summary,
        "station_mean": station_means(summary, [s.name for s in resolved]),
    }
