"""A real Prometheus server (Debian package ``prometheus``, 2.42) on loopback, for tests.

``apt-get install prometheus`` also installs a system service; tests never use it. They start
their own server with a generated config, a temporary TSDB and a free port, and talk to it
through the HTTP query API (:func:`query`). Rules files can be loaded too, so alert rules are
exercised by the same binary that runs them in production.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from servers import Server, free_port, spawn

#: Where Debian puts the binaries; PATH wins when it has them.
DEBIAN_BIN = Path("/usr/bin")


def binary(name: str = "prometheus") -> str:
    """Path of ``prometheus`` or ``promtool``, or a ``FileNotFoundError`` saying how to get it."""
    found = shutil.which(name) or (str(DEBIAN_BIN / name) if (DEBIAN_BIN / name).exists() else None)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found: install the Debian package (apt-get install -y prometheus; "
            "then stop the system service it may start)"
        )
    return found


def scrape_config(
    targets: Sequence[str],
    *,
    job: str = "flts",
    interval: str = "1s",
    rule_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """A Prometheus config scraping ``targets`` (``host:port``) every ``interval``."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


def start_prometheus(
    config: dict[str, Any],
    *,
    workdir: Path | None = None,
    port: int | None = None,
    timeout: float = 30.0,
) -> Server:
    """Start Prometheus with ``config`` (JSON is valid YAML) on 127.0.0.1; wait for /-/ready.

    Its TSDB and log live under ``workdir`` (a temporary directory removed on stop when not
    given)."""
    owned = workdir is None
    root = Path(tempfile.mkdtemp(prefix="flts-prometheus-")) if workdir is None else workdir
    root.mkdir(parents=True, exist_ok=True)
    config_path = root / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    chosen = port or free_port()
    url = f"http://127.0.0.1:{chosen}"
    argv = [
        binary("prometheus"),
        f"--config.file={config_path}",
        f"--web.listen-address=127.0.0.1:{chosen}",
        f"--storage.tsdb.path={root / 'data'}",
        "--storage.tsdb.retention.time=1h",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    server = spawn(
        "prometheus",
        argv,
        url=url,
        log_dir=root,
        ready=lambda: _get(f"{url}/-/ready", timeout=1.0)[0] == 200,
        timeout=timeout,
    )
    if owned:
        server.cleanups.append(lambda: shutil.rmtree(root, ignore_errors=True))
    return server


def query(url: str, promql: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant query (``/api/v1/query``); raises on a query error."""
    status, body = _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout)
    document = json.loads(body)
    if status != 200 or document.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed ({status}): {body[:500]!r}")
    result: list[dict[str, Any]] = document["data"]["result"]
    return result


def targets_up(url: str, *, timeout: float = 5.0) -> dict[str, str]:
    """``scrapeUrl -> health`` of the active targets (``up``, ``down``, ``unknown``)."""
    _status, body = _get(f"{url}/api/v1/targets", timeout)
    active = json.loads(body)["data"]["activeTargets"]
    return {str(t["scrapeUrl"]): str(t["health"]) for t in active}


def wait_for_value(
    url: str, promql: str, predicate: Any, *, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """Poll ``promql`` until ``predicate(result)`` is true; return that result."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = query(url, promql)
        if predicate(last):
            return last
        time.sleep(0.25)
    raise TimeoutError(f"{promql!r} never satisfied the check in {timeout:.0f}s; last: {last}")


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
