"""Every line a service writes is one JSON object, uvicorn's own lines included (start-up,
access, shutdown), in the serving process and in each worker process ``--workers`` spawns."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from servers import free_port, spawn

SRC = Path(__file__).resolve().parents[2] / "src"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def _lines(log: Path) -> list[dict[str, object]]:
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    assert lines
    plain = [line for line in lines if not line.startswith("{")]
    assert plain == [], "plain-text lines in a JSON log"
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    ("command", "service"),
    [
        (["--log-level", "info", "gateway"], "gateway"),
        (["serve", "--workers", "2"], "serve"),
    ],
)
def test_service_logs_are_json_lines_uvicorn_included(
    tmp_path: Path, command: list[str], service: str
) -> None:
    port = free_port()
    env = {**os.environ, "FLTS_HOME": str(tmp_path / "home"), "PYTHONPATH": str(SRC)}
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI", "FLTS_LOG_LEVEL"):
        env.pop(name, None)
    url = f"http://127.0.0.1:{port}"
    with spawn(
        service,
        [sys.executable, "-m", "flts", *command, "--port", str(port)],
        url=url,
        log_dir=tmp_path / "logs",
        env=env,
        ready=lambda: _answers(f"{url}/healthz"),
        timeout=120,
    ) as server:
        urllib.request.urlopen(f"{url}/healthz", timeout=5).close()
    assert server.log_path is not None
    records = _lines(server.log_path)
    assert {r["service"] for r in records} == {service}
    uvicorn = [r for r in records if str(r["logger"]).startswith("uvicorn")]
    messages = " ".join(str(r["message"]) for r in uvicorn)
    assert "Uvicorn running on" in messages
    assert "Application shutdown complete" in messages
    if service == "gateway":  # the access line of the probe above (--log-level info)
        assert any(
            r["logger"] == "uvicorn.access" and "/healthz" in str(r["message"]) for r in uvicorn
        )
    else:  # both worker processes logged their start, through the same formatter
        assert messages.count("Application startup complete") == 2
