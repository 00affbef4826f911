"""``flts pipeline`` through the real services in threads: its JSON result on stdout with
``-o json``, and exit status 1 with the decision's reason when nothing was promoted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flts.cli import app
from flts.data.synthetic import synthetic_traffic


def test_nothing_promoted_exits_1_and_says_why(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    frame = synthetic_traffic(600, seed=4)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:450].to_csv(train, index=False)
    frame.iloc[450:].to_csv(test, index=False)
    out = tmp_path / "out" / "pipeline.json"
    # Persistence alone cannot beat persistence: the gate refuses it.
    argv = ["pipeline", "--train", str(train), "--test", str(test), "--models", "persistence"]
    result = CliRunner().invoke(app, [*argv, "-o", "json", "--json-file", str(out)])
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["promoted"] is False
    assert document["champion"] is None
    assert [row["model_type"] for row in document["leaderboard"]] == ["PERSISTENCE"]
    assert json.loads(out.read_text()) == document
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line == f"error: nothing was promoted for global: {document['reason']}"
    assert document["reason"]


def test_bulk_pipeline_runs_every_station_and_reports_rejected(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    frames = []
    for seed, (name, rows) in enumerate((("North", 400), ("Tiny", 30), ("South", 400))):
        frame = synthetic_traffic(rows, seed=seed)
        frame.insert(0, "cell", name)
        frames.append(frame)
    fleet = tmp_path / "fleet.csv"
    pd.concat(frames).to_csv(fleet, index=False)
    argv = ["pipeline", "--train", str(fleet), "--identifier-column", "cell"]
    result = CliRunner().invoke(app, [*argv, "--models", "persistence", "-o", "json"])
    # Persistence alone is never promoted: every station decided, none promoted -> exit 1.
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert [s["identifier"] for s in document["stations"]] == ["North", "South"]
    assert all(s["reason_code"] for s in document["stations"])
    assert (document["accepted"], document["promoted"]) == (2, 0)
    assert [r["identifier"] for r in document["rejected"]] == ["Tiny"]
    assert "error: nothing was promoted for any of the 2 stations" in result.stderr


def test_bulk_pipeline_refuses_identifier(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.csv"
    fleet.write_text("time,cell\n")
    argv = ["pipeline", "--train", str(fleet), "--identifier-column", "cell", "--identifier", "X"]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 2
    assert "--identifier-column" in result.stderr


def test_bulk_pipeline_of_several_files_matches_test_files(
    tmp_path: Path, mlflow_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    argv = ["pipeline", "--models", "persistence", "-o", "json"]
    for seed, name in enumerate(("ElBorn", "LesCorts")):
        frame = synthetic_traffic(500, seed=seed)
        frame.iloc[:400].to_csv(tmp_path / f"{name}.csv", index=False)
        argv += ["--train", str(tmp_path / f"{name}.csv")]
    synthetic_traffic(500, seed=0).iloc[400:].to_csv(tmp_path / "ElBorn_test.csv", index=False)
    argv += ["--test", str(tmp_path / "ElBorn_test.csv")]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    stations = {s["identifier"]: s for s in document["stations"]}
    assert set(stations) == {"ElBorn", "LesCorts"}
    assert stations["ElBorn"]["config_hash"] != stations["LesCorts"]["config_hash"]
    assert document["rejected"] == []
