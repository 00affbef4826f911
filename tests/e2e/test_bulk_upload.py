"""A bulk upload through the embedded system: one CSV of three stations with an identifier
column goes into the gateway, and every station ends with its own champion served by the
inference API (each station preprocessed, trained by PERSISTENCE and RIDGE and evaluated on
its own), all three members of one group manifest."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import pandas as pd
import pytest

from flts.data.synthetic import synthetic_traffic
from servers.client import bearer, champion_run, healthy, wait_http

pytestmark = pytest.mark.e2e

STATIONS = ("CellA", "CellB", "CellC")


def _bulk() -> tuple[bytes, bytes]:
    """Train (32 h) and test (8 h) CSVs of every station, rows tagged with ``cell``."""
    trains, tests = [], []
    for seed, name in enumerate(STATIONS, start=11):
        frame = synthetic_traffic(1_200, seed=seed)
        frame.insert(0, "cell", name)
        trains.append(frame.iloc[:960])
        tests.append(frame.iloc[960:])
    return (
        pd.concat(trains).to_csv(index=False).encode(),
        pd.concat(tests).to_csv(index=False).encode(),
    )


def _champion(api: str, name: str, key: str) -> Callable[[], str | None]:
    return lambda: champion_run(api, name, key)


def test_bulk_csv_gives_every_station_a_champion(system: dict[str, Any]) -> None:
    gateway, api, key = system["gateway"], system["api"], system["key"]
    wait_http(lambda: healthy(gateway), 90, "the gateway", interval=0.3)
    wait_http(lambda: healthy(api), 90, "the inference API", interval=0.3)
    train, test = _bulk()
    response = httpx.post(
        f"{gateway}/v1/datasets",
        files={
            "train": ("fleet.csv", io.BytesIO(train), "text/csv"),
            "test": ("fleet_test.csv", io.BytesIO(test), "text/csv"),
        },
        data={"identifier_column": "cell"},
        headers=bearer(key),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == 3
    assert body["rejected"] == []
    assert sorted(m["identifier"] for m in body["datasets"]) == sorted(STATIONS)
    runs: dict[str, str | None] = {}
    for name in STATIONS:
        runs[name] = wait_http(_champion(api, name, key), 120, f"{name}'s champion", interval=0.5)
    assert len(set(runs.values())) == 3  # one model per station, not one shared
    listed = httpx.get(f"{gateway}/v1/datasets", headers=bearer(key)).json()["datasets"]
    assert {m["group"] for m in listed} == {body["group"]}
