"""The gateway's outbox: an upload the bus cannot announce answers 503 with ``Retry-After``
(a bulk upload 202 with its group) and is not listed, the reconciler announces it (once) when
the bus is back, and a store outage at the HTTP edge is a 503 too."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flts.bus import open_bus
from flts.data.synthetic import synthetic_traffic
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, Event
from flts.exceptions import InfrastructureError
from flts.fleet.groups import GROUPS_PREFIX, group_key, read_group
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app, ingest_dataset
from flts.services.outbox import Outbox, entry_key
from flts.settings import GatewaySettings, Settings
from flts.storage import ObjectStore


def request(app: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.request(method, url, **kwargs)

    return asyncio.run(send())


def upload(app: Any, seed: int = 3) -> httpx.Response:
    frame = synthetic_traffic(300, seed=seed)
    files = {
        "train": ("a.csv", frame.iloc[:240].to_csv(index=False).encode()),
        "test": ("b.csv", frame.iloc[240:].to_csv(index=False).encode()),
    }
    return request(app, "POST", "/v1/datasets", files=files)


def listed(app: Any) -> list[str]:
    response = request(app, "GET", "/v1/datasets")
    assert response.status_code == 200, response.text
    return [d["dataset_id"] for d in response.json()["datasets"]]


def announced(bus_url: str) -> list[DatasetUploadedEvent]:
    events: list[Event] = []
    with open_bus(bus_url) as bus:
        bus.consume(DATASET_UPLOADED, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return [e for e in events if isinstance(e, DatasetUploadedEvent)]


class Contexts:
    """Contexts on one named memory bus and one store: closing one context's bus is the
    outage; a new context is the bus back."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(
            home=tmp_path,
            bus_url=f"memory://{uuid.uuid4().hex}",
            storage_url=(tmp_path / "store").as_uri(),
            gateway=GatewaySettings(retry_after_seconds=9),
        )

    def new(self) -> ServiceContext:
        return ServiceContext(self.settings)


@pytest.fixture
def contexts(tmp_path: Path) -> Contexts:
    return Contexts(tmp_path)


def test_an_upload_the_bus_cannot_announce_is_503_unlisted_then_reconciled(
    contexts: Contexts,
) -> None:
    down = contexts.new()
    down.bus.close()  # publishing now fails with BusError, as with a broker that is gone
    app = create_gateway_app(down)
    response = upload(app)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "9"
    assert "announced" in response.json()["detail"]
    assert listed(app) == []  # stored, not announced: not listed
    assert announced(contexts.settings.bus.url) == []
    [pending] = Outbox(down).pending()

    back = contexts.new()
    assert app.state.reconciler.run_once() == []  # its bus is still down: logged, retried later
    outbox = Outbox(back)
    assert outbox.reconcile() == [pending]
    assert outbox.reconcile() == []  # done once
    [event] = announced(contexts.settings.bus.url)
    assert event.payload.dataset_id == pending
    assert listed(create_gateway_app(back)) == [pending]
    assert Outbox(back).pending() == []
    back.close()


def test_a_bulk_upload_the_bus_cannot_announce_is_202_with_its_group(
    contexts: Contexts,
) -> None:
    """Stored, in the group and in the outbox: the answer says the upload is done (202 with
    the group and the pending stations), not a 503 a client would retry into a second group;
    the reconciler announces every station of that group once the bus is back."""
    frames = []
    for seed, name in enumerate(("A", "B")):
        frame = synthetic_traffic(300, seed=seed)
        frame.insert(0, "cell", name)
        frames.append(frame)
    fleet = pd.concat(frames).to_csv(index=False).encode()
    down = contexts.new()
    down.bus.close()
    app = create_gateway_app(down)
    response = request(
        app,
        "POST",
        "/v1/datasets",
        files={"train": ("fleet.csv", fleet)},
        data={"identifier_column": "cell"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    manifest = read_group(down.store, body["group"])
    assert manifest is not None
    assert sorted(manifest.members) == ["A", "B"]
    ids = sorted(manifest.members.values())
    assert sorted(body["pending"]) == sorted(Outbox(down).pending()) == ids
    assert sorted(m["dataset_id"] for m in body["datasets"]) == ids
    assert body["group"] in body["detail"]
    assert listed(app) == []  # not listed before it is announced

    back = contexts.new()
    assert sorted(Outbox(back).reconcile()) == ids
    events = announced(contexts.settings.bus.url)
    assert {e.payload.group for e in events} == {body["group"]}
    assert sorted(e.payload.dataset_id for e in events) == ids
    assert sorted(listed(create_gateway_app(back))) == ids
    assert list(back.store.list(GROUPS_PREFIX.rstrip("/"))) == [group_key(body["group"])]
    back.close()


def test_an_announced_upload_leaves_no_outbox_entry(contexts: Contexts) -> None:
    context = contexts.new()
    app = create_gateway_app(context)
    response = upload(app)
    assert response.status_code == 201, response.text
    assert Outbox(context).pending() == []
    [event] = announced(contexts.settings.bus.url)
    assert listed(app) == [event.payload.dataset_id] == [response.json()["dataset_id"]]
    context.close()


def test_reconcile_finishes_an_interrupted_clean_up_and_skips_damaged_entries(
    contexts: Contexts,
) -> None:
    context = contexts.new()
    frame = synthetic_traffic(300, seed=5)
    train = frame.to_csv(index=False).encode()
    event, meta = ingest_dataset(context, train=train, test=None)
    store = context.store
    # A crash after meta.json but before the entry was removed: the entry comes back.
    Outbox(context).record(event, meta)
    store.put(entry_key("20240101T000000Z-0123456789ab"), b"{not json")
    assert Outbox(context).reconcile() == []
    assert len(announced(contexts.settings.bus.url)) == 1  # not announced a second time
    assert Outbox(context).pending() == ["20240101T000000Z-0123456789ab"]  # kept for a human
    context.close()


def test_a_store_outage_at_the_http_edge_is_503_with_retry_after(
    contexts: Contexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = contexts.new()

    def unreachable(self: ObjectStore, *args: object, **kwargs: object) -> None:
        raise InfrastructureError("object store write unavailable: connection refused")

    monkeypatch.setattr(ObjectStore, "put", unreachable)
    monkeypatch.setattr(ObjectStore, "list", unreachable)
    app = create_gateway_app(context)
    for response in (upload(app), request(app, "GET", "/v1/datasets")):
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "9"
        assert "object store" in response.json()["detail"]
    context.close()


def test_the_pending_answer_masks_the_cause(
    contexts: Contexts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 202's ``detail`` names the outage like a problem document would: with the
    credentials of any backend URL in it masked (docs/security.md)."""
    frame = synthetic_traffic(300, seed=1)
    frame.insert(0, "cell", "A")

    def refuse(self: Outbox, event: Any, meta: Any) -> None:
        raise InfrastructureError("kafka://flts:hunter2@broker:9092 is unreachable")

    monkeypatch.setattr(Outbox, "announce", refuse)
    response = request(
        create_gateway_app(contexts.new()),
        "POST",
        "/v1/datasets",
        files={"train": ("fleet.csv", frame.to_csv(index=False).encode())},
        data={"identifier_column": "cell"},
    )
    assert response.status_code == 202, response.text
    assert "hunter2" not in response.text
    assert "kafka://flts:****@broker:9092" in response.json()["detail"]
