"""An MLflow tracking server on loopback: PostgreSQL backend store, S3 artifacts proxied.

This is the distributed tracking setup (docs/architecture.md, §2): ``mlflow server`` with
``--serve-artifacts``, so clients (every FLTS service) upload and download model artifacts
through the server's HTTP API and need only the tracking URI; only the server holds S3 keys.

>>> db = create_database("mlflow")  # doctest: +SKIP
>>> with start_seaweedfs(work / "s3", ["mlflow"]) as s3, start_mlflow_server(
...     db.url, artifacts_destination="s3://mlflow/artifacts", s3=s3.credentials, workdir=work
... ) as server:
...     Tracker(Settings(tracking_uri=server.url))
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from servers import Server, free_port, spawn
from servers.s3 import S3Credentials


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_mlflow_server(
    backend_store_uri: str,
    *,
    artifacts_destination: str,
    workdir: Path,
    s3: S3Credentials | None = None,
    port: int | None = None,
    workers: int = 1,
    timeout: float = 120.0,
) -> Server:
    """Start ``mlflow server`` on ``127.0.0.1:port`` and wait for ``/health``.

    ``backend_store_uri`` is a SQLAlchemy URL (``postgresql+psycopg://...``; MLflow creates its
    schema on first start, which takes a few seconds). ``artifacts_destination`` is where the
    server stores artifacts (``s3://bucket/prefix``) with ``s3``'s endpoint and keys in its
    environment. One worker by default: the machines this runs on have two cores, shared.
    ``Server.url`` is the tracking URI, ``http://127.0.0.1:PORT``.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    # The job runner (for GenAI evaluation jobs) is a second process FLTS never uses.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    if s3 is not None:
        env.update(s3.env())
        env["MLFLOW_S3_ENDPOINT_URL"] = s3.endpoint_url  # MLflow's own name for the endpoint
    argv = [
        sys.executable,
        "-c",
        _SESSION_LEADER,
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    server = spawn(
        "mlflow-server",
        argv,
        url=url,
        log_dir=workdir,
        env=env,
        ready=lambda: _healthy(url),
        timeout=timeout,
    )
    if server.process is not None:
        server.cleanups.append(_killpg(server.process.pid))
    return server


# ``mlflow server`` runs uvicorn as a child process; if it is killed (or ignores SIGTERM past
# the grace period) the child would outlive it. Starting it as the leader of its own process
# group lets the cleanup kill whatever is left of the group.
_SESSION_LEADER = (
    "import os, sys; os.setsid(); "
    "os.execv(sys.executable, [sys.executable, '-m', 'mlflow', *sys.argv[1:]])"
)


def _killpg(pgid: int) -> Callable[[], None]:
    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):  # group already gone
            os.killpg(pgid, signal.SIGKILL)

    return kill
