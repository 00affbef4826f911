"""``flts replay`` against a real gateway on a loopback port: every row arrives once, paced by
its own cadence, with the injected regime change, and a refusal stops it with the reason."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from flts.data.synthetic import synthetic_traffic
from flts.exceptions import DataValidationError
from flts.live.observations import ObservationLog
from flts.live.replay import replay, replay_rows
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from helpers import memory_settings

from .support import LiveServer


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[httpx.Client, ServiceContext]]:
    context = ServiceContext(memory_settings(tmp_path))
    context.store.put_json(PromotionStore.pointer_key("S1"), {"run_id": "r"})
    server = LiveServer(create_gateway_app(context))
    client = server.__enter__()
    yield client, context
    server.__exit__(None, None, None)
    context.close()


def test_a_replay_stores_every_row_once_with_its_regime_change(
    gateway: tuple[httpx.Client, ServiceContext], tmp_path: Path
) -> None:
    client, context = gateway
    csv = tmp_path / "test.csv"
    frame = synthetic_traffic(120, seed=8)
    frame.to_csv(csv, index=False)
    spec = context.settings.feature_spec
    rows = replay_rows(csv, spec, shift_after=60, scale=2.5)
    started = time.monotonic()
    # 120 rows two minutes apart at 24,000x: 238 minutes in about 0.6 s
    report = replay(rows, identifier="S1", gateway=str(client.base_url), speed=24_000)
    took = time.monotonic() - started
    assert (report.rows, report.accepted, report.duplicates) == (120, 120, 0)
    assert 0.55 <= took < 5.0
    assert 1 < report.requests < 120  # rows due together travel together
    stored = ObservationLog(context.store, spec).read("S1")
    np.testing.assert_allclose(stored["down"].to_numpy()[:60], frame["down"].to_numpy()[:60])
    np.testing.assert_allclose(stored["down"].to_numpy()[60:], frame["down"].to_numpy()[60:] * 2.5)
    np.testing.assert_allclose(stored["rnti_count"].to_numpy(), frame["rnti_count"].to_numpy())
    again = replay(rows, identifier="S1", gateway=str(client.base_url), speed=1e9)
    assert (again.accepted, again.duplicates) == (0, 120)


def test_a_refused_replay_stops_with_the_gateways_reason(
    gateway: tuple[httpx.Client, ServiceContext], tmp_path: Path
) -> None:
    client, context = gateway
    csv = tmp_path / "test.csv"
    synthetic_traffic(20, seed=8).to_csv(csv, index=False)
    rows = replay_rows(csv, context.settings.feature_spec)
    with pytest.raises(DataValidationError, match=r"404.*unknown identifier 'S2'"):
        replay(rows, identifier="S2", gateway=str(client.base_url), speed=1e9)
