"""The accuracy benchmark end to end on small synthetic stations, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.accuracy import run_accuracy_benchmark
from flts.cli import app
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import ConfigurationError, DataValidationError


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for seed, name in enumerate(("Alpha", "Beta")):
        full = synthetic_traffic(900, seed=seed)
        full.iloc[:700].to_csv(tmp_path / f"{name}.csv", index=False)
        full.iloc[700:].to_csv(tmp_path / f"{name}_test.csv", index=False)
    return tmp_path


def test_document_has_the_promised_shape(data_dir: Path) -> None:
    document = run_accuracy_benchmark(
        data_dir, stations=["Alpha", "Beta"], models=["PERSISTENCE", "RIDGE"], seeds=2
    )
    assert len(document["results"]) == 2 * 2 * 2
    row = document["results"][0]
    for key in (
        "station",
        "model",
        "seed",
        "nrmse",
        "mae5",
        "rmse5",
        "per_target",
        "train_seconds",
    ):
        assert key in row
    assert set(row["per_target"]) == {"rnti_count", "rb_down", "rb_up", "down", "up"}
    assert row["horizon"] == 1  # the published one-step task by default
    assert document["protocol"]["horizons"] == [1]
    summary = {(e["station"], e["model"]): e for e in document["summary"]}
    assert set(summary) == {(s, m) for s in ("Alpha", "Beta") for m in ("PERSISTENCE", "RIDGE")}
    alpha_ridge = [
        r["nrmse"] for r in document["results"] if r["station"] == "Alpha" and r["model"] == "RIDGE"
    ]
    assert summary[("Alpha", "RIDGE")]["nrmse_mean"] == pytest.approx(sum(alpha_ridge) / 2)
    means = {e["model"]: e["nrmse_mean"] for e in document["station_mean"]}
    expected = (
        summary[("Alpha", "RIDGE")]["nrmse_mean"] + summary[("Beta", "RIDGE")]["nrmse_mean"]
    ) / 2
    assert means["RIDGE"] == pytest.approx(expected)
    assert document["protocol"]["seeds"] == [0, 1]


def test_cli_writes_json_and_prints_a_table(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "accuracy.json"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "accuracy",
            "--data-dir",
            str(data_dir),
            "--stations",
            "Alpha",
            "--models",
            "persistence,ridge",
            "--seeds",
            "1",
            "--json-file",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "RIDGE" in result.stdout
    assert json.loads(out.read_text())["summary"]


def test_cli_reports_missing_files_in_one_line(data_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["benchmark", "accuracy", "--data-dir", str(data_dir), "--stations", "Gamma"]
    )
    assert result.exit_code == 1
    assert "benchmark data not found" in result.stderr
    assert "Traceback" not in result.output


def test_unknown_model_fails_before_training(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="unknown model type"):
        run_accuracy_benchmark(data_dir, stations=["Alpha"], models=["NOPE"], seeds=1)


def test_data_validate_summarises_a_good_file_and_lists_problems(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    synthetic_traffic(50).to_csv(good, index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "50 rows" in result.stdout

    bad = tmp_path / "bad.csv"
    frame = synthetic_traffic(50).drop(columns="up")
    times = frame["time"].tolist()
    times[3] = times[2]
    frame["time"] = times
    frame.to_csv(bad, index=False)
    result = CliRunner().invoke(app, ["data", "validate", str(bad)])
    assert result.exit_code == 1
    assert "missing input columns ['up']" in result.stderr


def test_cli_defaults_match_the_benchmark_defaults() -> None:
    """The CLI repeats the defaults as text (so ``--help`` stays cheap); they must agree."""
    from flts import accuracy
    from flts.cli import benchmark

    assert ",".join(accuracy.DEFAULT_MODELS) == benchmark.DEFAULT_MODELS
    assert ",".join(accuracy.DEFAULT_STATIONS) == benchmark.DEFAULT_STATIONS
    assert (
        ",".join(f"{level:g}" for level in accuracy.DEFAULT_LEVELS) == benchmark.DEFAULT_INTERVALS
    )


def test_horizons_and_intervals_give_figures_at_the_last_step(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "horizons.json"
    result = CliRunner().invoke(
        app,
        [
            "benchmark",
            "accuracy",
            "--data-dir",
            str(data_dir),
            "--stations",
            "Alpha,Beta",
            "--models",
            "persistence,ridge",
            "--seeds",
            "1",
            "--horizons",
            "1,5",
            "--intervals",
            "80,95",
            "--json-file",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["protocol"]["horizons"] == [1, 5]
    assert document["protocol"]["interval_levels"] == [80.0, 95.0]
    rows = document["results"]
    assert sorted({(r["station"], r["model"], r["horizon"]) for r in rows}) == sorted(
        (s, m, h) for s in ("Alpha", "Beta") for m in ("PERSISTENCE", "RIDGE") for h in (1, 5)
    )
    for row in rows:
        for key in ("seed", "nrmse", "mae5", "rmse5", "mase", "wql"):
            assert isinstance(row[key], float | int), key
        assert set(row["coverage"]) == set(row["width"]) == {"80", "95"}
        assert 0.0 < row["coverage"]["80"] < row["coverage"]["95"] <= 1.0
        steps = row["per_step"]
        assert [s["step"] for s in steps] == list(range(1, row["horizon"] + 1))
        last = steps[-1]  # the row's figures are those at step h
        assert (row["nrmse"], row["mase"], row["coverage"]) == (
            last["nrmse"],
            last["mase"],
            last["coverage"],
        )
        if row["model"] == "PERSISTENCE":
            assert [s["mase"] for s in steps] == pytest.approx([1.0] * row["horizon"])
    five = [r for r in rows if r["horizon"] == 5 and r["model"] == "RIDGE"]
    assert all(r["per_step"][0]["nrmse"] != r["nrmse"] for r in five)  # step 1 is not step 5

    means = {(e["model"], e["horizon"]): e for e in document["station_mean"]}
    assert set(means) == {(m, h) for m in ("PERSISTENCE", "RIDGE") for h in (1, 5)}
    by_key = {(r["station"], r["model"], r["horizon"]): r for r in rows}
    for (model, horizon), entry in means.items():
        pair = [by_key[(s, model, horizon)] for s in ("Alpha", "Beta")]
        assert entry["nrmse_mean"] == pytest.approx((pair[0]["nrmse"] + pair[1]["nrmse"]) / 2)
        assert entry["wql_mean"] == pytest.approx((pair[0]["wql"] + pair[1]["wql"]) / 2)
        assert entry["coverage_mean"]["95"] == pytest.approx(
            (pair[0]["coverage"]["95"] + pair[1]["coverage"]["95"]) / 2
        )
        assert set(entry["width_mean"]) == {"80", "95"}
    assert "cov 95" in result.stdout


def test_bad_horizons_and_levels_fail_before_training(data_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="horizon"):
        run_accuracy_benchmark(
            data_dir, stations=["Alpha"], models=["PERSISTENCE"], horizons=[0], seeds=1
        )
    with pytest.raises(DataValidationError, match="between 0 and 100"):
        run_accuracy_benchmark(
            data_dir, stations=["Alpha"], models=["PERSISTENCE"], levels=[100.0], seeds=1
        )


def test_global_trains_once_across_the_stations_and_scores_each(data_dir: Path) -> None:
    pytest.importorskip("torch")
    document = run_accuracy_benchmark(
        data_dir,
        stations=["Alpha", "Beta"],
        models=["PERSISTENCE", "GLOBAL"],
        seeds=1,
        levels=(),
    )
    rows = {(r["station"], r["model"]): r for r in document["results"]}
    assert set(rows) == {(s, m) for s in ("Alpha", "Beta") for m in ("PERSISTENCE", "GLOBAL")}
    alpha, beta = rows["Alpha", "GLOBAL"], rows["Beta", "GLOBAL"]
    # One shared training: the same network and training time, each station's own test score.
    assert alpha["metadata"]["group_stations"] == beta["metadata"]["group_stations"] == 2
    assert alpha["train_seconds"] == beta["train_seconds"]
    assert (alpha["metadata"]["station_index"], beta["metadata"]["station_index"]) == (0, 1)
    assert alpha["nrmse"] != beta["nrmse"]
    assert {e["model"] for e in document["station_mean"]} == {"PERSISTENCE", "GLOBAL"}
