"""``flts pipeline`` through the real services in threads: its JSON result on stdout with
``-o json``, and exit status 1 with the decision's reason when nothing was promoted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
