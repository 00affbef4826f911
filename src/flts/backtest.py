"""Rolling-origin backtest inside a training file: how model defaults are chosen without ever
looking at a test file (docs/architecture.md, rule 14).

For one station's training CSV and ``k`` folds, the last ``k * block`` rows are cut into ``k``
consecutive blocks of ``block = floor(block_fraction * n)`` rows. Fold ``i`` trains on every row
before block ``i`` and is scored on block ``i``, so each fold forecasts data that lies strictly
after everything it was fitted on, as the evaluator does with the test file. Each fold's
training prefix goes through the pipeline's own recipe (:func:`flts.data.prepare`): NaN -> 0,
its own chronological 80/20 split for early stopping, percentile clipping and min-max scalers
fitted on its own training part, with the station's published clip percentiles
(:func:`flts.accuracy.recipe_for`); the block is windowed within itself, as the test file is.
Scores are :func:`flts.evaluation.score` in original units.

The default ``block_fraction`` of 0.1 with 3 folds scores 30% of the file in total, about
the size of the Barcelona test files (25% of their training files), while the first fold still
trains on 70% of it. A candidate is ranked by its NRMSE averaged over folds and seeds within a
station, then over stations, so a large station does not outvote a small one.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flts.accuracy import recipe_for
from flts.data import (
    FeatureSpec,
    MinMaxScaler,
    PreparedData,
    Recipe,
    TrafficTable,
    prepare,
    read_traffic_csv,
)
from flts.evaluation import score
from flts.exceptions import ConfigurationError
from flts.models import model_class

#: Figures reported per fold and averaged; NRMSE is the one candidates are ranked by.
METRICS = ("nrmse", "mae5", "rmse5")

#: Called after every fit with its result row (for progress displays, never required).
OnResult = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Candidate:
    """One configuration to compare: a model type and the params it is built with."""

    name: str
    model_type: str
    params: dict[str, Any] = field(default_factory=dict)


def _mlp(name: str, **params: Any) -> Candidate:
    return Candidate(name, "MLP", params)


def _ensemble(name: str, members: list[str], member_params: list[dict[str, Any]]) -> Candidate:
    return Candidate(name, "ENSEMBLE", {"members": members, "member_params": member_params})


#: The choices today's MLP and ENSEMBLE defaults embody, plus two references. Members with
#: ``{}`` params use that type's defaults (the ENSEMBLE's MLP is the MLP default).
DEFAULT_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("PERSISTENCE", "PERSISTENCE"),
    Candidate("RIDGE", "RIDGE"),
    _mlp("MLP 2x64", num_layers=2, hidden_size=64),
    _mlp("MLP 4x128", num_layers=4, hidden_size=128),
    _mlp("MLP 4x128 dropout 0.1", num_layers=4, hidden_size=128, dropout=0.1),
    _mlp("MLP 2x256", num_layers=2, hidden_size=256),
    _mlp("MLP 2x256 dropout 0.1", num_layers=2, hidden_size=256, dropout=0.1),
    _ensemble(
        "ENSEMBLE LSTM+LSTM(huber)+MLP",
        ["LSTM", "LSTM", "MLP"],
        [{"loss": "mse"}, {"loss": "huber"}, {}],
    ),
    _ensemble("ENSEMBLE LSTM+MLP", ["LSTM", "MLP"], [{}, {}]),
    _ensemble("ENSEMBLE MLP+MLP", ["MLP", "MLP"], [{}, {}]),
    _ensemble("ENSEMBLE RIDGE+MLP", ["RIDGE", "MLP"], [{}, {}]),
)


@dataclass(frozen=True)
class Fold:
    """Fold ``index`` trains on rows ``[0, train_rows)`` and is scored on ``[train_rows, stop)``."""

    index: int
    train_rows: int
    stop: int


def fold_bounds(
    n_rows: int, folds: int, block_fraction: float, spec: FeatureSpec | None = None
) -> list[Fold]:
    """The ``folds`` consecutive blocks at the end of an ``n_rows`` file, earliest first."""
    spec = spec or FeatureSpec()
    if folds < 1:
        raise ConfigurationError("folds must be at least 1")
    if not 0.0 < block_fraction < 1.0:
        raise ConfigurationError(f"block_fraction must be in (0, 1), got {block_fraction}")
    block = math.floor(block_fraction * n_rows)
    first = n_rows - folds * block
    window = spec.lags + spec.horizon
    if block < window or first < 2 * window:
        raise ConfigurationError(
            f"{n_rows} rows cannot hold {folds} blocks of {block} rows "
            f"(block_fraction {block_fraction}): each block needs at least {window} rows "
            f"and the first fold's training prefix at least {2 * window}"
        )
    return [Fold(i, first + i * block, first + (i + 1) * block) for i in range(folds)]


def _rows(table: TrafficTable, start: int, stop: int) -> TrafficTable:
    return TrafficTable(table.frame.iloc[start:stop], table.frequency)


def fold_data(
    table: TrafficTable, fold: Fold, *, spec: FeatureSpec, recipe: Recipe
) -> PreparedData:
    """The fold as the pipeline would see it: its prefix as the training file (split, clipped
    and scaled on its own training part) and its block as the held-out file."""
    return prepare(
        _rows(table, 0, fold.train_rows),
        _rows(table, fold.train_rows, fold.stop),
        spec=spec,
        recipe=recipe,
    )


def check_candidates(candidates: Sequence[Candidate], spec: FeatureSpec | None = None) -> None:
    """Build every candidate once, untrained, so a bad model type or param fails before hours
    of training rather than in the middle of them; names must be unique (they key results)."""
    spec = spec or FeatureSpec()
    if not candidates:
        raise ConfigurationError("no candidates given")
    names = [c.name for c in candidates]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigurationError(f"candidate names repeat: {repeated}")
    inputs = MinMaxScaler.fit(np.zeros((1, len(spec.inputs))), spec.inputs)
    for candidate in candidates:
        model_class(candidate.model_type)(
            spec, inputs, inputs.subset(spec.targets), **candidate.params
        )


def load_candidates(source: str | Path) -> list[Candidate]:
    """``"default"`` or a JSON file holding a list of ``{"name", "model", "params"}`` objects
    (``name`` defaults to the model type, ``params`` to ``{}``)."""
    if str(source) == "default":
        return list(DEFAULT_CANDIDATES)
    path = Path(source)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read candidates from {path}: {exc}") from exc
    if not isinstance(entries, list):
        raise ConfigurationError(f"{path} must hold a JSON list of candidates")
    candidates = []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise ConfigurationError(f"{path}: candidate {position} needs a 'model' string")
        unknown = sorted(set(entry) - {"name", "model", "params"})
        if unknown:
            raise ConfigurationError(f"{path}: candidate {position} has unknown keys {unknown}")
        params = entry.get("params", {})
        if not isinstance(params, dict):
            raise ConfigurationError(f"{path}: candidate {position} 'params' must be an object")
        model_type = entry["model"].strip().upper()
        candidates.append(Candidate(str(entry.get("name", model_type)), model_type, params))
    return candidates


def run_fold(prepared: PreparedData, candidate: Candidate, seed: int) -> dict[str, Any]:
    """Fit one candidate on a fold's train/validation windows and score it on the block."""
    assert prepared.test is not None
    model = model_class(candidate.model_type)(
        prepared.spec,
        prepared.input_scaler,
        prepared.target_scaler,
        seed=seed,
        **candidate.params,
    )
    model.fit(prepared.train, prepared.validation)
    scores = score(prepared.test.targets, model.predict(prepared.test), prepared.spec.targets)
    return {
        "candidate": candidate.name,
        "model": model.model_type,
        "seed": seed,
        **{name: float(getattr(scores, name)) for name in METRICS},
        "train_seconds": model.metadata["train_seconds"],
    }


def _mean(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    return {name: statistics.fmean(r[name] for r in rows) for name in METRICS}


def station_summary(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per station and candidate: each fold's seed-mean figures and their mean over folds."""
    groups: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
    for row in results:
        key = (row["station"], row["candidate"])
        groups.setdefault(key, {}).setdefault(row["fold"], []).append(row)
    summary = []
    for (station, candidate), by_fold in groups.items():
        folds = [{"fold": i, **_mean(by_fold[i])} for i in sorted(by_fold)]
        summary.append(
            {
                "station": station,
                "candidate": candidate,
                "model": by_fold[min(by_fold)][0]["model"],
                "folds": folds,
                **_mean(folds),
            }
        )
    return summary


def rank(summary: Sequence[dict[str, Any]], stations: Sequence[str]) -> list[dict[str, Any]]:
    """Candidates run on every station, best (lowest mean NRMSE over stations) first."""
    by_candidate: dict[str, dict[str, dict[str, Any]]] = {}
    for entry in summary:
        by_candidate.setdefault(entry["candidate"], {})[entry["station"]] = entry
    ranking = []
    for candidate, per_station in by_candidate.items():
        if set(per_station) != set(stations):
            continue
        entries = [per_station[s] for s in stations]
        ranking.append(
            {
                "candidate": candidate,
                "model": entries[0]["model"],
                "per_station_nrmse": {s: per_station[s]["nrmse"] for s in stations},
                **_mean(entries),
            }
        )
    ranking.sort(key=lambda e: e["nrmse"])
    return [{"rank": position, **entry} for position, entry in enumerate(ranking, start=1)]


def winners(ranking: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per model type, the name of its best-ranked candidate."""
    best: dict[str, str] = {}
    for entry in ranking:  # already best first
        best.setdefault(entry["model"], entry["candidate"])
    return best


def run_backtest(
    data_dir: Path,
    *,
    stations: Sequence[str],
    candidates: Sequence[Candidate],
    folds: int = 3,
    seeds: int = 1,
    block_fraction: float = 0.1,
    spec: FeatureSpec | None = None,
    on_result: OnResult | None = None,
) -> dict[str, Any]:
    """Backtest every candidate on every station's ``<station>.csv`` (never its test file) and
    return the JSON document: protocol, one row per fit, per-station means, ranking, winners."""
    if seeds < 1:
        raise ConfigurationError("seeds must be at least 1")
    spec = spec or FeatureSpec()
    check_candidates(candidates, spec)
    paths = {name: data_dir / f"{name}.csv" for name in stations}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise ConfigurationError(f"training files not found: {', '.join(missing)}")
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    protocol_folds: dict[str, list[dict[str, Any]]] = {}
    recipes = {}
    for station, path in paths.items():
        table = read_traffic_csv(path, spec)
        recipe = recipe_for(station)
        recipes[station] = recipe.model_dump(mode="json")
        bounds = fold_bounds(len(table), folds, block_fraction, spec)
        protocol_folds[station] = [
            {
                "fold": f.index,
                "train_rows": f.train_rows,
                "block_rows": f.stop - f.train_rows,
                "block_start": str(table.times[f.train_rows]),
            }
            for f in bounds
        ]
        for fold in bounds:
            prepared = fold_data(table, fold, spec=spec, recipe=recipe)
            for candidate in candidates:
                for seed in range(seeds):
                    row = {"station": station, "fold": fold.index}
                    row.update(run_fold(prepared, candidate, seed))
                    results.append(row)
                    if on_result is not None:
                        on_result(row)
    summary = station_summary(results)
    ranking = rank(summary, list(stations))
    return {
        "protocol": {
            "method": "rolling origin inside each training file: fold i trains on the rows "
            "before block i and is scored on block i; test files are never read",
            "folds": folds,
            "block_fraction": block_fraction,
            "seeds": list(range(seeds)),
            "feature_spec": spec.model_dump(mode="json"),
            "recipes": recipes,
            "fold_rows": protocol_folds,
            "ranked_by": "NRMSE, mean over folds and seeds per station, then over stations",
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "seconds": round(time.perf_counter() - started, 2),
        },
        "candidates": [
            {"name": c.name, "model": c.model_type, "params": c.params} for c in candidates
        ],
        "results": results,
        "station_summary": summary,
        "ranking": ranking,
        "winners": winners(ranking),
    }
