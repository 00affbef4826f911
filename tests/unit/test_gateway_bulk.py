"""Bulk uploads over HTTP (POST /v1/datasets with identifier_column or several train files):
201 with the group, every accepted station's metadata and the rejected ones; 422 naming the
problem when nothing can be accepted; single-station uploads answer as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.data.synthetic import synthetic_traffic
from flts.fleet.groups import read_group
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import GatewaySettings
from helpers import GatewayClient, memory_settings


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _stations(*names: str, rows: int = 300) -> bytes:
    frames = []
    for seed, name in enumerate(names):
        frame = synthetic_traffic(rows if name != "Short" else 40, seed=seed)
        frame.insert(0, "cell", name)
        frames.append(frame)
    return _csv(pd.concat(frames))


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ServiceContext]:
    gateway = GatewaySettings(max_upload_bytes=4 << 20, max_upload_files=4)
    ctx = ServiceContext(memory_settings(tmp_path, gateway=gateway))
    yield ctx
    ctx.close()


@pytest.fixture
def client(context: ServiceContext) -> GatewayClient:
    return GatewayClient(create_gateway_app(context))


def test_identifier_column_upload(client: GatewayClient, context: ServiceContext) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("fleet.csv", _stations("A", "Short", "B"), "text/csv")},
        data={"identifier_column": "cell"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert [m["identifier"] for m in body["datasets"]] == ["A", "B"]
    assert [r["identifier"] for r in body["rejected"]] == ["Short"]
    assert body["rejected"][0]["problems"]
    manifest = read_group(context.store, body["group"])
    assert manifest is not None
    assert set(manifest.members) == {"A", "B"}
    listed = client.get("/v1/datasets").json()["datasets"]
    assert sorted(m["identifier"] for m in listed) == ["A", "B"]
    assert {m["group"] for m in listed} == {body["group"]}


def test_missing_identifier_column_is_422(client: GatewayClient) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("fleet.csv", _stations("A"), "text/csv")},
        data={"identifier_column": "station"},
    )
    assert response.status_code == 422
    detail = " ".join(response.json()["problems"])
    assert "'station'" in detail
    assert "'cell'" in detail


def test_every_station_rejected_is_422(client: GatewayClient) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("fleet.csv", _stations("Short", "bad name"), "text/csv")},
        data={"identifier_column": "cell"},
    )
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert any(p.startswith("Short:") for p in problems)
    assert any(p.startswith("bad name:") for p in problems)
    assert client.get("/v1/datasets").json()["datasets"] == []


def test_several_train_files(client: GatewayClient) -> None:
    files = [
        ("train", ("ElBorn.csv", _csv(synthetic_traffic(300, seed=1)), "text/csv")),
        ("train", ("LesCorts.csv", _csv(synthetic_traffic(300, seed=2)), "text/csv")),
        ("test", ("ElBorn_test.csv", _csv(synthetic_traffic(300, seed=3).iloc[200:]), "text/csv")),
    ]
    response = client.post("/v1/datasets", files=files)
    assert response.status_code == 201, response.text
    metas = {m["identifier"]: m for m in response.json()["datasets"]}
    assert set(metas) == {"ElBorn", "LesCorts"}
    assert metas["ElBorn"]["test"]["filename"] == "ElBorn_test.csv"
    assert metas["LesCorts"]["test"] is None


def test_bulk_refuses_an_identifier_field(client: GatewayClient) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("fleet.csv", _stations("A"), "text/csv")},
        data={"identifier_column": "cell", "identifier": "A"},
    )
    assert response.status_code == 422
    assert "identifier" in response.json()["problems"][0]


def test_too_many_files_is_422(client: GatewayClient) -> None:
    data = _csv(synthetic_traffic(300))
    files = [("train", (f"S{i}.csv", data, "text/csv")) for i in range(5)]
    response = client.post("/v1/datasets", files=files)
    assert response.status_code == 422
    assert "files" in response.json()["problems"][0].lower()


def test_single_upload_unchanged(client: GatewayClient) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("a.csv", _csv(synthetic_traffic(300)), "text/csv")},
        data={"identifier": "Solo"},
    )
    assert response.status_code == 201
    assert response.json()["identifier"] == "Solo"
    assert "group" not in response.json()
