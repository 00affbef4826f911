"""``flts pipeline -o json`` against a real MLflow tracking server: stdout is the JSON
document alone (MLflow writes "View run ... at" lines to stdout when a run ends on a server
unless told not to), and the champion it names is the one the pipeline promoted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from flts.data.synthetic import synthetic_traffic
from servers import Server

SRC = Path(__file__).resolve().parents[2] / "src"


def test_pipeline_json_on_stdout_is_the_document_alone(
    mlflow_server: Server, tmp_path: Path
) -> None:
    frame = synthetic_traffic(600, seed=6)
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    frame.iloc[:450].to_csv(train, index=False)
    frame.iloc[450:].to_csv(test, index=False)
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "FLTS_HOME": str(tmp_path / "home"),
        "FLTS_TRACKING_URI": mlflow_server.url,
        "FLTS_BUS_URL": f"memory://{uuid.uuid4().hex}",
        "FLTS_STORAGE_URL": f"memory://{uuid.uuid4().hex}",
        "FLTS_TRACKING__REGISTRY_PREFIX": f"flts-json-{uuid.uuid4().hex[:8]}",
    }
    for name in ("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "FLTS_LOG_LEVEL"):
        env.pop(name, None)
    argv = ["pipeline", "--train", str(train), "--test", str(test), "--models", "RIDGE,PERSISTENCE"]
    done = subprocess.run(
        [sys.executable, "-m", "flts", *argv, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(done.stdout)  # fails on any line besides the document
    assert document["promoted"] is True
    assert document["champion"]["model_type"] == "RIDGE"
    assert "View run" not in done.stdout + done.stderr
