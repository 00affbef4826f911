"""``POST/GET /v1/observations`` on the gateway and the ``observations`` worker: rows in as
JSON, CSV or bus events; every client mistake a 4xx with its reason and nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flts.data.synthetic import synthetic_traffic
from flts.events import OBSERVATIONS, Observations, new_event
from flts.live.observations import OBSERVATIONS_ROOT
from flts.live.worker import ObservationsService
from flts.promotion import PromotionStore
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import LiveSettings
from helpers import GatewayClient, memory_settings

TRAFFIC = synthetic_traffic(200, seed=6)


def records(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {str(name): value for name, value in row.items()}
        for row in TRAFFIC.iloc[start : start + count].to_dict("records")
    ]


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ServiceContext]:
    ctx = ServiceContext(memory_settings(tmp_path, live=LiveSettings(max_rows_per_request=50)))
    ctx.store.put_json(PromotionStore.pointer_key("S1"), {"run_id": "r"})  # S1 has a champion
    yield ctx
    ctx.close()


@pytest.fixture
def client(context: ServiceContext) -> GatewayClient:
    return GatewayClient(create_gateway_app(context))


def stored(context: ServiceContext) -> list[str]:
    return list(context.store.list(OBSERVATIONS_ROOT))


def test_json_rows_are_stored_and_read_back(client: GatewayClient) -> None:
    answer = client.post("/v1/observations", json={"identifier": "S1", "rows": records(0, 20)})
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 20
    assert answer.json()["newest"] == "2018-02-05T00:38:00"
    again = client.post("/v1/observations", json={"identifier": "S1", "rows": records(10, 20)})
    assert (again.json()["accepted"], again.json()["duplicates"]) == (10, 10)
    read = client.get("/v1/observations/S1", params={"start": "2018-02-05T00:20:00", "limit": 5})
    assert read.status_code == 200
    body = read.json()
    assert body["count"] == 5
    assert [row["time"] for row in body["rows"]] == [
        f"2018-02-05T00:{m:02d}:00" for m in range(50, 60, 2)
    ]
    assert body["rows"][0]["down"] == pytest.approx(TRAFFIC["down"][25])


def test_csv_rows_with_problems_named_by_csv_line(
    client: GatewayClient, context: ServiceContext
) -> None:
    frame = TRAFFIC.iloc[:6].copy()
    csv = frame.to_csv(index=False).encode()
    ok = client.post(
        "/v1/observations?identifier=S1", content=csv, headers={"content-type": "text/csv"}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["accepted"] == 6
    frame = TRAFFIC.iloc[6:9].astype({"up": object})
    frame.loc[frame.index[1], "up"] = "lots"
    bad = client.post(
        "/v1/observations?identifier=S1",
        content=frame.to_csv(index=False).encode(),
        headers={"content-type": "text/csv; charset=utf-8"},
    )
    assert bad.status_code == 422
    assert "column 'up' is not numeric at 3: 'lots'" in bad.json()["detail"]
    assert len(stored(context)) == 1  # the first request's one part, nothing from the second


def test_client_mistakes_are_4xx_and_store_nothing(
    client: GatewayClient, context: ServiceContext
) -> None:
    def post(body: dict[str, Any]) -> httpx.Response:
        return client.post("/v1/observations", **body)

    unknown = post({"json": {"identifier": "S9", "rows": records(0, 2)}})
    assert unknown.status_code == 404
    assert "no model has been promoted" in unknown.json()["detail"]
    assert post({"json": {"identifier": "S1", "rows": records(0, 51)}}).status_code == 413
    assert post({"content": b"a,b", "headers": {"content-type": "text/plain"}}).status_code == 415
    assert post({"json": {"identifier": "../x", "rows": records(0, 1)}}).status_code == 422
    assert post({"json": {"identifier": "S1", "rows": []}}).status_code == 422
    assert post({"json": {"identifier": "S1", "rows": [{"time": [1]}]}}).status_code == 422
    no_time = [{k: v for k, v in r.items() if k != "time"} for r in records(0, 2)]
    missing = post({"json": {"identifier": "S1", "rows": no_time}})
    assert missing.status_code == 422
    assert "missing time column 'time'" in missing.json()["detail"]
    bad_time = records(0, 2)
    bad_time[1]["time"] = "yesterday"
    assert (
        "unparsable time at rows 1"
        in post({"json": {"identifier": "S1", "rows": bad_time}}).json()["detail"]
    )
    assert post({"content": b"time\n", "headers": {"content-type": "text/csv"}}).status_code == 422
    assert client.get("/v1/observations/S1", params={"start": "soon"}).status_code == 422
    assert stored(context) == []


def test_a_conflicting_resend_is_422_naming_the_rows(
    client: GatewayClient, context: ServiceContext
) -> None:
    client.post("/v1/observations", json={"identifier": "S1", "rows": records(0, 5)})
    changed = records(3, 4)
    changed[0]["down"] += 1.0
    answer = client.post("/v1/observations", json={"identifier": "S1", "rows": changed})
    assert answer.status_code == 422
    assert "conflict" in answer.json()["detail"]
    assert "2018-02-05T00:06:00" in answer.json()["detail"]
    assert len(stored(context)) == 1


def test_the_worker_stores_streamed_rows_and_dead_letters_bad_ones(
    context: ServiceContext,
) -> None:
    bus = context.bus
    bus.publish(OBSERVATIONS, new_event(Observations(rows=records(0, 10)), identifier="S1"))
    bus.publish(OBSERVATIONS, new_event(Observations(rows=records(0, 3)), identifier="S7"))
    service = ObservationsService(context)
    stats = bus.consume(service.topics, service.group, service.handle, max_idle=0.5)
    assert (stats.handled, stats.dead_lettered) == (1, 1)
    assert len(service.ingest.log.read("S1")) == 10
    (letter,) = bus.dead_letters(OBSERVATIONS)
    assert "unknown identifier 'S7'" in str(letter.error)
