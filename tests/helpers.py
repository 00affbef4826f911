"""Helpers shared by the unit and API tests: per-test settings on fresh memory:// backends,
validated synthetic tables, processed data as preprocessing leaves it, and its claim check;
an object store that counts its requests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
from starlette.types import ASGIApp

from flts.data import FeatureSpec, TrafficTable, split, validate_frame
from flts.data.processed import ProcessedKeys, write_processed
from flts.data.synthetic import synthetic_traffic
from flts.events import TrainingDataEvent, new_event
from flts.services.preprocess import processed_payloads
from flts.settings import Settings
from flts.storage import ObjectStore, Versioned


def memory_settings(home: Path, **overrides: Any) -> Settings:
    """Settings of one test: its own memory:// bus and object store, tracking at
    ``home/mlflow.db`` and everything else under ``home``."""
    return Settings(
        home=home,
        bus_url=f"memory://{uuid.uuid4().hex}",
        storage_url=f"memory://{uuid.uuid4().hex}",
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        **overrides,
    )


def synthetic_tables(
    rows: int, train_rows: int, *, seed: int, spec: FeatureSpec | None = None, **options: Any
) -> tuple[TrafficTable, TrafficTable]:
    """Validated train and test tables: the first ``train_rows`` of one synthetic series and
    the rows that follow them (``options`` go to :func:`synthetic_traffic`)."""
    spec = spec or FeatureSpec()
    full = synthetic_traffic(rows, seed=seed, **options)
    train = validate_frame(full.iloc[:train_rows].reset_index(drop=True), spec)
    test = validate_frame(full.iloc[train_rows:].reset_index(drop=True), spec)
    return train, test


def write_data(store: ObjectStore, config_hash: str, *, seed: int = 5) -> ProcessedKeys:
    """Processed data as preprocessing leaves it (800 synthetic rows, the last 200 as test)."""
    spec = FeatureSpec()
    train, test = synthetic_tables(800, 600, seed=seed, spec=spec)
    return write_processed(
        store,
        split(train, test, spec=spec),
        config_hash=config_hash,
        canonical_json="{}",
        input_digests={},
    )


def training_event(
    keys: ProcessedKeys, *, identifier: str = "global", correlation_id: str | None = None
) -> TrainingDataEvent:
    """The ``training-data`` claim check for ``keys`` (correlation id ``corr-<hash[:4]>`` unless
    given)."""
    training, _ = processed_payloads(keys)
    event = new_event(
        training,
        identifier=identifier,
        correlation_id=correlation_id or f"corr-{keys.config_hash[:4]}",
    )
    assert isinstance(event, TrainingDataEvent)
    return event


class GatewayClient:
    """A synchronous client over httpx's ASGI transport (starlette's GatewayClient warns about
    httpx, and warnings are errors here). The app runs in the test's own event loop, so the
    request body is streamed to it lazily, as from a socket."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


class CountingStore(ObjectStore):
    """An object store that records every request its callers make (method and key) and
    forwards it to ``inner``: what promotion discovery costs, counted on any backend."""

    def __init__(self, inner: ObjectStore) -> None:  # no super().__init__: nothing to open
        self.inner = inner
        self.url, self.fs, self.root, self.local = inner.url, inner.fs, inner.root, inner.local
        self.calls: list[tuple[str, str]] = []

    def reads(self) -> list[tuple[str, str]]:
        """The calls so far, then forget them."""
        calls, self.calls = self.calls, []
        return calls

    def get(self, key: str) -> bytes:
        self.calls.append(("get", key))
        return self.inner.get(key)

    def get_versioned(self, key: str) -> Versioned:
        self.calls.append(("get_versioned", key))
        return self.inner.get_versioned(key)

    def get_if_changed(self, key: str, tag: str | None) -> Versioned | None:
        self.calls.append(("get_if_changed", key))
        return self.inner.get_if_changed(key, tag)

    def exists(self, key: str) -> bool:
        self.calls.append(("exists", key))
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        self.calls.append(("list", prefix))
        return self.inner.list(prefix)

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        self.calls.append(("put", key))
        self.inner.put(key, data)

    def put_atomic(self, key: str, data: bytes) -> None:
        self.calls.append(("put_atomic", key))
        self.inner.put_atomic(key, data)

    def put_if_match(self, key: str, data: bytes, tag: str | None) -> bool:
        self.calls.append(("put_if_match", key))
        return self.inner.put_if_match(key, data, tag)

    def delete(self, key: str) -> None:
        self.calls.append(("delete", key))
        self.inner.delete(key)
