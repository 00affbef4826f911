"""Real servers for the integration tests, started once per session and only when a test asks
(so unit tests start nothing): SeaweedFS for S3, a fresh PostgreSQL database, and an MLflow
tracking server on that database with artifacts in S3 served through the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers import Server
from servers.mlflow_server import start_mlflow_server
from servers.postgres import create_database
from servers.s3 import SeaweedFS, start_seaweedfs

#: Bucket and prefix the MLflow server stores artifacts under.
ARTIFACT_BUCKET = "flts-mlflow"
ARTIFACT_PREFIX = "mlflow"


@pytest.fixture(scope="session")
def integration_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("integration-servers")


@pytest.fixture(scope="session")
def s3_server(integration_dir: Path) -> Iterator[SeaweedFS]:
    with start_seaweedfs(integration_dir / "seaweedfs", [ARTIFACT_BUCKET]) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Server]:
    """A database of this session's own, dropped at the end (``Server.url`` is its
    SQLAlchemy URL)."""
    with create_database("flts_it") as database:
        yield database


@pytest.fixture(scope="session")
def mlflow_server(
    s3_server: SeaweedFS, postgres_database: Server, integration_dir: Path
) -> Iterator[Server]:
    """``mlflow server`` on the session's database with ``--serve-artifacts`` to S3; only the
    server has the S3 keys, the test process talks HTTP to it."""
    with start_mlflow_server(
        postgres_database.url,
        artifacts_destination=f"s3://{ARTIFACT_BUCKET}/{ARTIFACT_PREFIX}",
        s3=s3_server.credentials,
        workdir=integration_dir,
    ) as server:
        yield server
