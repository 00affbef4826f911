"""Upload gateway: a valid upload is stored byte for byte and announced on the bus; every
client mistake answers a 4xx with its reason and stores nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.data.hashing import content_digest
from flts.data.synthetic import synthetic_traffic
from flts.datasets import is_dataset_id
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, Event
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app, sanitize_filename
from flts.settings import GatewaySettings
from helpers import GatewayClient, memory_settings


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


@pytest.fixture
def traffic() -> pd.DataFrame:
    return synthetic_traffic(300, seed=3)


def _context(tmp_path: Path, max_upload_bytes: int = 1 << 20) -> ServiceContext:
    gateway = GatewaySettings(max_upload_bytes=max_upload_bytes)
    return ServiceContext(memory_settings(tmp_path, gateway=gateway))


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ServiceContext]:
    ctx = _context(tmp_path)
    yield ctx
    ctx.close()


@pytest.fixture
def client(context: ServiceContext) -> GatewayClient:
    return GatewayClient(create_gateway_app(context))


def _published(context: ServiceContext) -> list[Event]:
    events: list[Event] = []
    context.bus.consume(DATASET_UPLOADED, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return events


def _stored_keys(context: ServiceContext) -> list[str]:
    store = context.store
    return [str(p)[len(store.root) + 1 :] for p in store.fs.find(store.root)]


def test_upload_stores_bytes_and_publishes_event(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame
) -> None:
    train, test = _csv(traffic.iloc[:240]), _csv(traffic.iloc[240:])
    response = client.post(
        "/v1/datasets",
        files={"train": ("PobleSec.csv", train, "text/csv"), "test": ("t.csv", test, "text/csv")},
        data={"identifier": "PobleSec"},
    )
    assert response.status_code == 201, response.text
    meta = response.json()
    dataset_id = meta["dataset_id"]
    assert is_dataset_id(dataset_id)
    assert response.headers["location"] == f"/v1/datasets/{dataset_id}"
    assert meta["identifier"] == "PobleSec"
    assert meta["train"]["rows"] == 240
    assert meta["test"]["rows"] == 60
    assert meta["test_split"] == "uploaded"

    (event,) = _published(context)
    assert isinstance(event, DatasetUploadedEvent)
    assert event.identifier == "PobleSec"
    assert event.event_id == meta["event_id"]
    assert event.correlation_id == meta["correlation_id"]
    payload = event.payload
    assert payload.dataset_id == dataset_id
    assert payload.filename == "PobleSec.csv"
    assert payload.train_key == f"datasets/{dataset_id}/train.csv"
    assert payload.test_key == f"datasets/{dataset_id}/test.csv"
    assert payload.size_bytes == len(train)
    assert payload.digest == content_digest(train)
    assert context.store.get(payload.train_key) == train
    assert context.store.get(payload.test_key) == test

    download = client.get(f"/v1/datasets/{dataset_id}/train.csv")
    assert download.status_code == 200
    assert download.content == train
    assert client.get(f"/v1/datasets/{dataset_id}/test.csv").content == test
    assert client.get(f"/v1/datasets/{dataset_id}").json() == meta
    listing = client.get("/v1/datasets").json()["datasets"]
    assert [d["dataset_id"] for d in listing] == [dataset_id]
    assert client.get("/v1/datasets", params={"identifier": "ElBorn"}).json() == {"datasets": []}


def test_upload_without_test_defaults_to_global_and_holdout(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame
) -> None:
    response = client.post("/v1/datasets", files={"train": ("a.csv", _csv(traffic), "text/csv")})
    assert response.status_code == 201, response.text
    meta = response.json()
    assert meta["identifier"] == "global"
    assert meta["test"] is None
    assert meta["test_split"].startswith("holdout")
    (event,) = _published(context)
    assert isinstance(event, DatasetUploadedEvent)
    assert event.identifier == "global"
    assert event.payload.test_key is None
    assert client.get(f"/v1/datasets/{meta['dataset_id']}/test.csv").status_code == 404


def test_bad_csv_is_422_with_every_problem(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame
) -> None:
    bad = traffic.astype({"down": object, "time": object})
    bad.loc[5, "down"] = "lots"
    bad.loc[7, "time"] = "yesterday"
    test = traffic.drop(columns=["up"])
    response = client.post(
        "/v1/datasets",
        files={"train": ("a.csv", _csv(bad), "text/csv"), "test": ("b.csv", _csv(test))},
    )
    assert response.status_code == 422
    problems = response.json()["problems"]
    assert any(p.startswith("train: unparsable time at 9") for p in problems), problems
    assert any(p.startswith("train: column 'down' is not numeric at 7") for p in problems)
    assert any(p.startswith("test: missing input columns ['up']") for p in problems)
    assert _published(context) == []
    assert _stored_keys(context) == []


def test_too_short_for_holdout_is_422(client: GatewayClient, traffic: pd.DataFrame) -> None:
    response = client.post("/v1/datasets", files={"train": ("a.csv", _csv(traffic.iloc[:40]))})
    assert response.status_code == 422
    assert "held-out" in response.json()["problems"][0]


def test_not_a_csv_is_422(client: GatewayClient) -> None:
    response = client.post("/v1/datasets", files={"train": ("a.csv", b"\xff\xfe\x00garbage")})
    assert response.status_code == 422
    assert response.json()["problems"]


def test_over_the_limit_is_413_and_stores_nothing(tmp_path: Path, traffic: pd.DataFrame) -> None:
    context = _context(tmp_path, max_upload_bytes=2_000)
    client = GatewayClient(create_gateway_app(context))
    train = _csv(traffic)  # ~60 kB: under the framing allowance, over the file limit
    assert len(train) > 2_000
    response = client.post("/v1/datasets", files={"train": ("a.csv", train)})
    assert response.status_code == 413
    assert "2000" in response.json()["detail"]

    big = _csv(synthetic_traffic(1_000, seed=1))  # > limit + allowance: refused by length
    response = client.post("/v1/datasets", files={"train": ("a.csv", big)})
    assert response.status_code == 413

    # No Content-Length (chunked): the stream is cut off while reading.
    boundary = "flts-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="train"; filename="a.csv"\r\n'
            f"Content-Type: text/csv\r\n\r\n"
        ).encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8_192):
            sent.append(start)
            yield body[start : start + 8_192]

    response = client.post(
        "/v1/datasets",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert len(sent) < len(body) // 8_192  # refused before the whole body was read
    assert _published(context) == []
    assert _stored_keys(context) == []
    context.close()


@pytest.mark.parametrize("identifier", ["../etc", "a/b", "", "-flag", "x" * 65, "sp ace"])
def test_bad_identifier_is_422(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame, identifier: str
) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("a.csv", _csv(traffic))},
        data={"identifier": identifier},
    )
    assert response.status_code == 422
    assert "identifier" in response.json()["detail"]
    assert _stored_keys(context) == []


def test_form_mistakes_are_4xx(client: GatewayClient, traffic: pd.DataFrame) -> None:
    no_train = client.post("/v1/datasets", files={"test": ("a.csv", _csv(traffic))})
    assert no_train.status_code == 422
    assert "'train'" in no_train.json()["detail"]
    typo = client.post(
        "/v1/datasets", files={"train": ("a.csv", _csv(traffic))}, data={"tset": "x"}
    )
    assert typo.status_code == 422
    assert "tset" in typo.json()["detail"]
    text_train = client.post(
        "/v1/datasets", data={"train": "time,down"}, files={"test": ("a.csv", _csv(traffic))}
    )
    assert text_train.status_code == 422
    text_test = client.post(
        "/v1/datasets", data={"test": "time,down"}, files={"train": ("a.csv", _csv(traffic))}
    )
    assert text_test.status_code == 422
    assert "'test'" in text_test.json()["detail"]
    not_multipart = client.post(
        "/v1/datasets", content=b"time,down\n", headers={"content-type": "text/csv"}
    )
    assert not_multipart.status_code == 415


def test_unknown_and_malformed_dataset_ids(client: GatewayClient) -> None:
    unknown = "20240101T000000Z-0123456789ab"
    for path in (f"/v1/datasets/{unknown}", f"/v1/datasets/{unknown}/train.csv"):
        response = client.get(path)
        assert response.status_code == 404
        assert unknown in response.json()["detail"]
    for bad in ("..", "abc", "20240101T000000Z-0123456789ab.json", "%2e%2e%2fmeta"):
        assert client.get(f"/v1/datasets/{bad}/train.csv").status_code in (404, 422)
        assert client.get(f"/v1/datasets/{bad}").status_code in (404, 422)
    assert client.get("/v1/datasets/not-an-id").status_code == 422


def test_filename_cannot_traverse(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame
) -> None:
    response = client.post(
        "/v1/datasets", files={"train": ("../../../etc/passwd.csv", _csv(traffic))}
    )
    assert response.status_code == 201, response.text
    dataset_id = response.json()["dataset_id"]
    assert response.json()["train"]["filename"] == "passwd.csv"
    assert sorted(_stored_keys(context)) == [
        f"datasets/{dataset_id}/meta.json",
        f"datasets/{dataset_id}/train.csv",
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("..\\..\\win.csv", "win.csv"),
        ("/abs/path/x.csv", "x.csv"),
        ("..", "fallback.csv"),
        (".hidden.csv", "hidden.csv"),
        ("na me;rm -rf.csv", "na_me_rm_-rf.csv"),
        (None, "fallback.csv"),
    ],
)
def test_sanitize_filename(name: str | None, expected: str) -> None:
    assert sanitize_filename(name, "fallback.csv") == expected


def test_healthz(client: GatewayClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_upload_carries_its_own_horizon_and_lags(
    client: GatewayClient, context: ServiceContext, traffic: pd.DataFrame
) -> None:
    response = client.post(
        "/v1/datasets",
        files={"train": ("a.csv", _csv(traffic), "text/csv")},
        data={"horizon": "15", "lags": "12"},
    )
    assert response.status_code == 201, response.text
    assert (response.json()["horizon"], response.json()["lags"]) == (15, 12)
    (event,) = _published(context)
    assert isinstance(event, DatasetUploadedEvent)
    assert (event.payload.horizon, event.payload.lags) == (15, 12)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"horizon": "0"}, "horizon"),
        ({"horizon": "1001"}, "horizon"),
        ({"lags": "-3"}, "'lags' must be a whole number"),
        ({"horizon": "ten"}, "'horizon' must be a whole number"),
    ],
)
def test_upload_with_a_bad_horizon_or_lags_is_a_422_that_stores_nothing(
    client: GatewayClient,
    context: ServiceContext,
    traffic: pd.DataFrame,
    fields: dict[str, str],
    message: str,
) -> None:
    response = client.post(
        "/v1/datasets", files={"train": ("a.csv", _csv(traffic), "text/csv")}, data=fields
    )
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert _stored_keys(context) == []
    assert _published(context) == []


def test_a_free_slot_is_taken_even_with_no_wait(tmp_path: Path, traffic: pd.DataFrame) -> None:
    """``upload_wait_seconds=0`` means "refuse when busy", not "refuse always"."""
    gateway = GatewaySettings(max_concurrent_uploads=1, upload_wait_seconds=0)
    context = ServiceContext(memory_settings(tmp_path, gateway=gateway))
    try:
        client = GatewayClient(create_gateway_app(context))
        for _ in range(2):  # and the slot is given back after each upload
            response = client.post(
                "/v1/datasets", files={"train": ("t.csv", _csv(traffic), "text/csv")}
            )
            assert response.status_code == 201, response.text
    finally:
        context.close()
