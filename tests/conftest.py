"""Shared fixtures: small synthetic traffic (no real data in tests; the benchmark uses it),
per-test settings and service context on fresh memory:// backends with their own copy of
an MLflow SQLite database, and the session's Kafka-API broker."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.data import FeatureSpec, PreparedData, TrafficTable, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.services.context import ServiceContext
from flts.settings import Settings
from helpers import memory_settings, synthetic_tables
from servers import Server
from servers.kafka import start_kafka


@pytest.fixture
def spec() -> FeatureSpec:
    return FeatureSpec()


@pytest.fixture
def frame() -> pd.DataFrame:
    """1,500 rows (~2 days) of 2-minute synthetic traffic as raw strings/numbers."""
    return synthetic_traffic(1_500, seed=1)


@pytest.fixture
def table(frame: pd.DataFrame, spec: FeatureSpec) -> TrafficTable:
    return validate_frame(frame, spec)


@pytest.fixture
def prepared(spec: FeatureSpec) -> PreparedData:
    """Train/validation from one synthetic table, test from the rows that follow it."""
    train, test = synthetic_tables(2_000, 1_600, seed=2, spec=spec)
    return prepare(train, test, spec=spec)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema created once: creating the tables takes
    about two seconds, copying the file a millisecond."""
    from flts.tracking import Tracker  # imports MLflow: only for the tests that ask for it

    home = tmp_path_factory.mktemp("mlflow-template")
    database = home / "mlflow.db"
    Tracker(Settings(home=home, tracking_uri=f"sqlite:///{database}")).client.search_experiments()
    return database


@pytest.fixture
def settings(tmp_path: Path, mlflow_template: Path) -> Settings:
    """Settings of one test: fresh memory:// bus and store, a copy of the template database
    for tracking, everything else under ``tmp_path``."""
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    return memory_settings(tmp_path)


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One private Tansu broker (Kafka API) per session, started on first use; every suite
    on Kafka (contract, integration, faults) shares it with unique topics and groups."""
    with start_kafka(Path(tmp_path_factory.mktemp("tansu"))) as server:
        yield server


@pytest.fixture
def context(settings: Settings) -> Iterator[ServiceContext]:
    context = ServiceContext(settings)
    yield context
    context.close()
