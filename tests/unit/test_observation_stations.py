"""``POST /v1/observations`` with many stations in one JSON body: each station is stored or
rejected on its own, the answer says which; the request fails only when nothing was stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flts.data.synthetic import synthetic_traffic
from flts.live.observations import OBSERVATIONS_ROOT
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import LiveSettings
from helpers import GatewayClient, memory_settings

TRAFFIC = synthetic_traffic(100, seed=8)


def records(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {str(name): value for name, value in row.items()}
        for row in TRAFFIC.iloc[start : start + count].to_dict("records")
    ]


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ServiceContext]:
    ctx = ServiceContext(memory_settings(tmp_path, live=LiveSettings(max_rows_per_request=50)))
    for name in ("S1", "S2"):
        ctx.store.put_json(PromotionStore.pointer_key(name), {"run_id": "r"})
    yield ctx
    ctx.close()


@pytest.fixture
def client(context: ServiceContext) -> GatewayClient:
    return GatewayClient(create_gateway_app(context))


def test_every_station_stored(client: GatewayClient) -> None:
    body = {
        "stations": [
            {"identifier": "S1", "rows": records(0, 10)},
            {"identifier": "S2", "rows": records(0, 5)},
        ]
    }
    answer = client.post("/v1/observations", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["stored"], result["rejected"], result["accepted"]) == (2, 0, 15)
    assert [s["identifier"] for s in result["stations"]] == ["S1", "S2"]
    assert client.get("/v1/observations/S2").json()["count"] == 5


def test_bad_station_reported_while_others_are_stored(
    client: GatewayClient, context: ServiceContext
) -> None:
    broken = records(0, 3)
    broken[1]["down"] = "lots"
    body = {
        "stations": [
            {"identifier": "S1", "rows": records(0, 4)},
            {"identifier": "S2", "rows": broken},
            {"identifier": "Unknown", "rows": records(0, 2)},
        ]
    }
    answer = client.post("/v1/observations", json=body)
    assert answer.status_code == 200, answer.text
    stations = {s["identifier"]: s for s in answer.json()["stations"]}
    assert stations["S1"]["status"] == "stored"
    assert stations["S1"]["accepted"] == 4
    assert stations["S2"]["status"] == "rejected"
    assert stations["S2"]["http_status"] == 422
    assert any("down" in p for p in stations["S2"]["problems"])
    assert stations["Unknown"]["http_status"] == 404
    assert client.get("/v1/observations/S2").json()["count"] == 0
    assert all("/S2/" not in key for key in context.store.list(OBSERVATIONS_ROOT))


def test_nothing_stored_is_422_with_every_station(client: GatewayClient) -> None:
    broken = records(0, 2)
    broken[0]["up"] = "x"
    body = {
        "stations": [
            {"identifier": "S1", "rows": broken},
            {"identifier": "Nobody", "rows": records(0, 2)},
        ]
    }
    answer = client.post("/v1/observations", json=body)
    assert answer.status_code == 422
    problems = answer.json()["problems"]
    assert any(p.startswith("S1:") for p in problems)
    assert any(p.startswith("Nobody:") for p in problems)


def test_only_unknown_stations_is_404(client: GatewayClient) -> None:
    body = {"stations": [{"identifier": "Nobody", "rows": records(0, 2)}]}
    assert client.post("/v1/observations", json=body).status_code == 404


def test_row_limit_counts_the_whole_request(client: GatewayClient) -> None:
    body = {
        "stations": [
            {"identifier": "S1", "rows": records(0, 30)},
            {"identifier": "S2", "rows": records(0, 30)},
        ]
    }
    answer = client.post("/v1/observations", json=body)
    assert answer.status_code == 413
    assert client.get("/v1/observations/S1").json()["count"] == 0


def test_a_station_twice_is_422(client: GatewayClient) -> None:
    body = {
        "stations": [
            {"identifier": "S1", "rows": records(0, 2)},
            {"identifier": "S1", "rows": records(2, 2)},
        ]
    }
    answer = client.post("/v1/observations", json=body)
    assert answer.status_code == 422
    assert "more than once" in answer.json()["problems"][0]


def test_malformed_station_entry_is_422(client: GatewayClient) -> None:
    answer = client.post("/v1/observations", json={"stations": [{"identifier": "S1"}]})
    assert answer.status_code == 422
    assert "rows" in answer.json()["problems"][0]
