"""HTTP helpers that drive a running FLTS system from outside, as a client would: the
embedded end-to-end test and ``make e2e`` (``scripts/e2e_distributed.py``)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pandas as pd

from servers import wait_for

T = TypeVar("T")

#: Traffic columns a regime change rescales.
TRAFFIC_LEVEL_COLUMNS = ("down", "up", "rb_down", "rb_up", "rnti_count")


def wait_http(check: Callable[[], T], timeout: float, what: str, *, interval: float = 0.5) -> T:
    """:func:`~servers.wait_for` where an HTTP error means "not yet"."""
    return wait_for(check, timeout, what, interval=interval, errors=(httpx.HTTPError,))


def healthy(url: str) -> bool:
    """The service at ``url`` answers ``/healthz`` with 200."""
    return httpx.get(f"{url}/healthz").status_code == 200


def bearer(key: str | None) -> dict[str, str]:
    """The ``Authorization`` header of an API key (none for ``None``: an open system)."""
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def upload_dataset(
    gateway: str,
    train: bytes,
    test: bytes,
    identifier: str,
    *,
    timeout: float = 120,
    key: str | None = None,
) -> httpx.Response:
    """Upload a training CSV and its test CSV through the gateway (unchecked response)."""
    return httpx.post(
        f"{gateway}/v1/datasets",
        files={
            "train": ("train.csv", io.BytesIO(train), "text/csv"),
            "test": ("test.csv", io.BytesIO(test), "text/csv"),
        },
        data={"identifier": identifier},
        headers=bearer(key),
        timeout=timeout,
    )


def forecast_body(test_csv: bytes, identifier: str, lags: int = 10) -> dict[str, Any]:
    """A ``/v1/forecast`` request from the last ``lags`` rows of ``test_csv``."""
    rows = pd.read_csv(io.BytesIO(test_csv)).tail(lags)
    return {"identifier": identifier, "history": json.loads(rows.to_json(orient="records"))}


def champion_run(api: str, identifier: str, key: str | None = None) -> str | None:
    """The run id the inference API at ``api`` serves for ``identifier`` (None: no champion)."""
    response = httpx.get(
        f"{api}/v1/models/champion", params={"identifier": identifier}, headers=bearer(key)
    )
    return str(response.json()["run_id"]) if response.status_code == 200 else None


def scale_traffic(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    """``frame`` (changed in place) at another traffic level: a regime change."""
    for column in TRAFFIC_LEVEL_COLUMNS:
        frame[column] = frame[column] * factor
    return frame


class LoadClient:
    """Keeps posting one forecast request to an inference API from a background thread, as a
    user would during a champion swap; counts answers per serving run id and records every
    non-200 answer. Use as a context manager: the load runs inside the ``with`` block."""

    def __init__(
        self, api: str, body: dict[str, Any], *, timeout: float = 30, key: str | None = None
    ) -> None:
        self.api = api
        self.headers = bearer(key)
        self.body = body
        self.timeout = timeout
        self.seen: dict[str, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.api, timeout=self.timeout, headers=self.headers) as http:
            while not self._stop.is_set():
                reply = http.post("/v1/forecast", json=self.body)
                if reply.status_code != 200:
                    self.failures.append(f"{self.api}: {reply.status_code} {reply.text[:200]}")
                    continue
                run_id = reply.headers["x-model-run-id"]
                self.seen[run_id] = self.seen.get(run_id, 0) + 1

    @property
    def requests(self) -> int:
        return sum(self.seen.values()) + len(self.failures)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
