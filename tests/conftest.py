"""Shared fixtures: small synthetic traffic (no real data in tests; the benchmark uses it)."""

from __future__ import annotations

import pandas as pd
import pytest

from flts.data import FeatureSpec, PreparedData, TrafficTable, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic


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
    full = synthetic_traffic(2_000, seed=2)
    train = validate_frame(full.iloc[:1_600].reset_index(drop=True), spec)
    test = validate_frame(full.iloc[1_600:].reset_index(drop=True), spec)
    return prepare(train, test, spec=spec)
