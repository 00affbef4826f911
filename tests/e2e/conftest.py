"""The embedded system for the end-to-end tests: every service in its own OS process on the
SQLite bus, behind API keys, on free loopback ports."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flts.security import create_key
from flts.settings import Settings
from flts.supervisor import Supervisor, service_specs
from servers import free_port

MODELS = ["PERSISTENCE", "RIDGE"]


@pytest.fixture
def system(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The running system; a test's ``system_env`` marker adds ``FLTS_*`` settings."""
    marker = request.node.get_closest_marker("system_env")
    extra: dict[str, str] = dict(marker.args[0]) if marker else {}
    gateway_port, serve_port = free_port(), free_port()
    keys_file = tmp_path / "api-keys.json"
    key = create_key(keys_file, "e2e", ["forecast", "upload"])
    env = {
        **os.environ,
        "FLTS_HOME": str(tmp_path / "home"),
        "FLTS_SECURITY__KEYS_FILE": str(keys_file),
        "FLTS_GATEWAY__PORT": str(gateway_port),
        "FLTS_SERVING__PORT": str(serve_port),
        "FLTS_SERVING__POINTER_POLL_SECONDS": "0.5",
        "FLTS_EVALUATION__EXPECTED_MODELS": json.dumps(MODELS),
        **extra,
    }
    settings = Settings(home=tmp_path / "home", serving={"port": serve_port})
    supervisor = Supervisor(
        service_specs(settings, MODELS, serve_ports=[serve_port]),
        log_dir=tmp_path / "logs",
        env=env,
        max_restarts=0,
    )
    supervisor.start()
    try:
        yield {
            "gateway": f"http://127.0.0.1:{gateway_port}",
            "api": f"http://127.0.0.1:{serve_port}",
            "supervisor": supervisor,
            "logs": tmp_path / "logs",
            "key": key,
        }
    finally:
        supervisor.stop()
