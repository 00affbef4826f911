"""The rolling-origin backtest: folds stay chronological and inside the training file, each
fold is prepared on its own training part, candidates are ranked by mean NRMSE, and the CLI
writes the JSON without ever reading a test file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flts.accuracy import recipe_for
from flts.backtest import (
    Candidate,
    Fold,
    check_candidates,
    fold_bounds,
    fold_data,
    load_candidates,
    rank,
    run_backtest,
    winners,
)
from flts.cli import app
from flts.data import FeatureSpec, Recipe, TrafficTable, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import ConfigurationError

TINY_MLP = {"hidden_size": 8, "num_layers": 1, "max_epochs": 2}
CHEAP = [
    Candidate("persistence", "PERSISTENCE"),
    Candidate("ridge", "RIDGE"),
    Candidate("tiny mlp", "MLP", TINY_MLP),
]


def _table(rows: int = 600, *, seed: int = 0, missing: float = 0.0) -> TrafficTable:
    return validate_frame(
        synthetic_traffic(rows, seed=seed, missing_fraction=missing), FeatureSpec()
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Two stations' training files and, next to them, test files that cannot be parsed:
    a backtest that read one would fail."""
    for seed, name in enumerate(("ElBorn", "Beta")):
        synthetic_traffic(600, seed=seed, missing_fraction=0.02).to_csv(
            tmp_path / f"{name}.csv", index=False
        )
        (tmp_path / f"{name}_test.csv").write_text("not,a\ntraffic file\n")
    return tmp_path


def test_folds_are_the_last_consecutive_blocks_earliest_first() -> None:
    assert fold_bounds(1000, 3, 0.1) == [Fold(0, 700, 800), Fold(1, 800, 900), Fold(2, 900, 1000)]
    assert fold_bounds(1005, 2, 0.2) == [Fold(0, 603, 804), Fold(1, 804, 1005)]


@pytest.mark.parametrize(
    ("rows", "folds", "fraction"), [(100, 3, 0.05), (100, 3, 0.32), (1000, 0, 0.1), (100, 1, 1.0)]
)
def test_impossible_folds_are_refused(rows: int, folds: int, fraction: float) -> None:
    with pytest.raises(ConfigurationError):
        fold_bounds(rows, folds, fraction)


def test_no_fold_trains_on_its_block_or_any_later_row() -> None:
    spec, table = FeatureSpec(), _table(missing=0.02)
    times = table.times.to_numpy()
    for fold in fold_bounds(len(table), 3, 0.1, spec):
        prepared = fold_data(table, fold, spec=spec, recipe=Recipe())
        block_start = times[fold.train_rows]
        for part in (prepared.train, prepared.validation):
            assert part.input_times.max() < block_start
            assert part.target_times.max() < block_start
        assert prepared.test is not None
        assert prepared.test.input_times.min() >= block_start
        assert prepared.test.target_times.max() <= times[fold.stop - 1]
        # Scored on the whole block bar the first window's lags, as a test file is.
        assert len(prepared.test) == fold.stop - fold.train_rows - spec.lags


def test_rows_after_a_fold_cannot_change_what_it_learns_from() -> None:
    spec, table = FeatureSpec(), _table()
    fold = fold_bounds(len(table), 3, 0.1, spec)[0]
    later = table.frame.copy()
    later.iloc[fold.train_rows :] *= 1000.0
    original = fold_data(table, fold, spec=spec, recipe=Recipe())
    changed = fold_data(TrafficTable(later, table.frequency), fold, spec=spec, recipe=Recipe())
    assert changed.input_scaler == original.input_scaler
    assert changed.clip_bounds == original.clip_bounds
    np.testing.assert_array_equal(changed.train.x, original.train.x)
    np.testing.assert_array_equal(changed.validation.x, original.validation.x)
    assert changed.test is not None
    assert original.test is not None
    assert not np.array_equal(changed.test.x, original.test.x)


def test_each_fold_is_clipped_and_scaled_on_its_own_training_part() -> None:
    spec, table = FeatureSpec(), _table()
    recipe = recipe_for("ElBorn")  # 10/90 percentiles, not the default 5/95
    scalers = []
    for fold in fold_bounds(len(table), 3, 0.1, spec):
        prepared = fold_data(table, fold, spec=spec, recipe=recipe)
        own = table.frame.iloc[: math.ceil(0.8 * fold.train_rows)]
        scaler = prepared.input_scaler
        unclipped = spec.inputs.index("mcs_down")
        assert scaler.maximum[unclipped] == own["mcs_down"].max()
        assert scaler.minimum[unclipped] == own["mcs_down"].min()
        clipped = spec.inputs.index("down")
        assert scaler.maximum[clipped] == pytest.approx(np.percentile(own["down"], 90))
        assert scaler.minimum[clipped] == pytest.approx(np.percentile(own["down"], 10))
        scalers.append(scaler)
    assert len({s.maximum for s in scalers}) == len(scalers)


def test_rank_orders_by_mean_nrmse_over_stations_and_skips_partial_candidates() -> None:
    def entry(station: str, candidate: str, model: str, nrmse: float) -> dict[str, object]:
        return {
            "station": station,
            "candidate": candidate,
            "model": model,
            "nrmse": nrmse,
            "mae5": 1.0,
            "rmse5": 2.0,
        }

    summary = [
        entry("A", "mlp small", "MLP", 0.5),
        entry("B", "mlp small", "MLP", 0.9),  # mean 0.7
        entry("A", "mlp big", "MLP", 0.7),
        entry("B", "mlp big", "MLP", 0.6),  # mean 0.65: better overall, worse on A
        entry("A", "ridge", "RIDGE", 0.8),
        entry("B", "ridge", "RIDGE", 0.8),
        entry("A", "only on A", "MLP", 0.1),
    ]
    ranking = rank(summary, ["A", "B"])
    assert [e["candidate"] for e in ranking] == ["mlp big", "mlp small", "ridge"]
    assert [e["rank"] for e in ranking] == [1, 2, 3]
    assert ranking[0]["nrmse"] == pytest.approx(0.65)
    assert ranking[0]["per_station_nrmse"] == {"A": 0.7, "B": 0.6}
    assert winners(ranking) == {"MLP": "mlp big", "RIDGE": "ridge"}


def test_backtest_document_averages_folds_then_stations(data_dir: Path) -> None:
    document = run_backtest(
        data_dir, stations=["ElBorn", "Beta"], candidates=CHEAP, folds=2, seeds=2
    )
    assert len(document["results"]) == 2 * 2 * len(CHEAP) * 2
    assert document["protocol"]["recipes"]["ElBorn"]["clip_percentiles"] == [10.0, 90.0]
    summary = {(e["station"], e["candidate"]): e for e in document["station_summary"]}
    ridge_a = [
        r["nrmse"]
        for r in document["results"]
        if r["station"] == "ElBorn" and r["candidate"] == "ridge"
    ]
    assert summary[("ElBorn", "ridge")]["nrmse"] == pytest.approx(np.mean(ridge_a))
    assert [f["fold"] for f in summary[("ElBorn", "ridge")]["folds"]] == [0, 1]
    ranking = document["ranking"]
    assert [e["nrmse"] for e in ranking] == sorted(e["nrmse"] for e in ranking)
    for entry in ranking:
        expected = np.mean([summary[(s, entry["candidate"])]["nrmse"] for s in ("ElBorn", "Beta")])
        assert entry["nrmse"] == pytest.approx(expected)
    assert set(document["winners"]) == {"PERSISTENCE", "RIDGE", "MLP"}


def test_bad_candidates_fail_before_any_training(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not accept"):
        check_candidates([Candidate("x", "MLP", {"width": 3})])
    with pytest.raises(ConfigurationError, match="repeat"):
        check_candidates([Candidate("x", "RIDGE"), Candidate("x", "PERSISTENCE")])
    with pytest.raises(ConfigurationError, match="unknown model type"):
        run_backtest(data_dir, stations=["Beta"], candidates=[Candidate("x", "NOPE")])
    with pytest.raises(ConfigurationError, match="not found"):
        run_backtest(data_dir, stations=["Gamma"], candidates=CHEAP)


def test_candidates_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "candidates.json"
    path.write_text(json.dumps([{"model": "ridge"}, {"name": "m", "model": "MLP", "params": {}}]))
    assert load_candidates(path) == [Candidate("RIDGE", "RIDGE"), Candidate("m", "MLP")]
    assert load_candidates("default")[0].model_type == "PERSISTENCE"
    path.write_text(json.dumps([{"model": "MLP", "param": {}}]))
    with pytest.raises(ConfigurationError, match="unknown keys"):
        load_candidates(path)


def test_the_default_candidates_are_valid_and_include_todays_defaults() -> None:
    candidates = load_candidates("default")
    check_candidates(candidates)
    models = {c.model_type for c in candidates}
    assert {"PERSISTENCE", "RIDGE", "MLP", "ENSEMBLE"} <= models
    assert any(c.params.get("members") == ["LSTM", "LSTM", "MLP"] for c in candidates)


def test_cli_writes_the_json_and_prints_the_ranking(data_dir: Path, tmp_path: Path) -> None:
    candidates = tmp_path / "candidates.json"
    candidates.write_text(
        json.dumps([{"model": "PERSISTENCE"}, {"name": "tiny", "model": "MLP", "params": TINY_MLP}])
    )
    out = tmp_path / "out" / "backtest.json"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "backtest",
            "--data-dir",
            str(data_dir),
            "--stations",
            "ElBorn,Beta",
            "--folds",
            "2",
            "--candidates",
            str(candidates),
            "--json-file",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert {e["candidate"] for e in document["ranking"]} == {"PERSISTENCE", "tiny"}
    assert document["protocol"]["folds"] == 2
    assert len(document["results"]) == 2 * 2 * 2
    assert "Backtest NRMSE" in result.stdout


def test_cli_reports_a_missing_training_file_in_one_line(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["benchmark", "backtest", "--data-dir", str(data_dir), "--stations", "Gamma"]
    )
    assert result.exit_code == 1
    assert "training files not found" in result.output
