"""Every line a process writes through ``flts.logs`` is one JSON object: uvicorn's records
under its log config (a traceback as the ``error`` field), ``warnings``, MLflow's loggers and
uncaught exceptions in threads. Run in a fresh interpreter: logging is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_PROGRAM = """
import logging, logging.config, threading, warnings
from flts.logs import configure_logging, uvicorn_log_config

configure_logging("probe", "info")
warnings.warn("a library complains")
logging.getLogger("mlflow.tracking").warning("mlflow speaks")
thread = threading.Thread(target=lambda: 1 / 0, name="worker-thread")
thread.start(); thread.join()
logging.config.dictConfig(uvicorn_log_config("probe", "info", uvicorn_level="warning"))
logging.getLogger("uvicorn.access").info("hidden: below uvicorn's level")
logging.getLogger("flts.x").info("ours at info")
try:
    raise RuntimeError("handler failed")
except RuntimeError:
    logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
"""


def test_every_line_is_json_with_tracebacks_as_a_field() -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert done.stdout == ""
    records = [json.loads(line) for line in done.stderr.splitlines()]  # fails on a plain line
    by_logger = {r["logger"]: r for r in records}
    assert "a library complains" in by_logger["py.warnings"]["message"]
    assert by_logger["mlflow.tracking"]["message"] == "mlflow speaks"
    crash = by_logger["flts"]
    assert crash["level"] == "critical"
    assert "worker-thread" in crash["message"]
    assert "ZeroDivisionError" in crash["error"]
    assert by_logger["flts.x"]["message"] == "ours at info"
    asgi = by_logger["uvicorn.error"]
    assert asgi["level"] == "error"
    assert "Traceback" in asgi["error"]
    assert "RuntimeError: handler failed" in asgi["error"]
    assert "uvicorn.access" not in by_logger
    assert {r["service"] for r in records} == {"probe"}
