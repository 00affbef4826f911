"""The accuracy benchmark end to end on small synthetic stations, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.accuracy import run_accuracy_benchmark
from flts.cli import app
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import ConfigurationError


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
            "--json",
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
