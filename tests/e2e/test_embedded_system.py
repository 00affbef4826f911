"""The embedded system for real: every service in its own OS process on the SQLite bus.

Upload through the gateway -> preprocess -> one trainer per model type -> evaluator ->
promotion -> the inference replica serves the champion. Then a second upload with another
configuration promotes a new champion while a client keeps sending requests: the replica
switches without a single failed request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from flts.data.synthetic import synthetic_traffic
from servers.client import (
    LoadClient,
    bearer,
    champion_run,
    forecast_body,
    healthy,
    scale_traffic,
    upload_dataset,
    wait_http,
)

pytestmark = pytest.mark.e2e
MODELS = ["PERSISTENCE", "RIDGE"]


def _dataset(seed: int, start: str, scale: float = 1.0) -> tuple[bytes, bytes]:
    """Train (2 days) and test (12 h) CSV bytes; ``scale`` shifts the traffic level so that a
    model trained on another level is measurably worse (a regime change)."""
    frame = scale_traffic(synthetic_traffic(1_800, seed=seed, start=start), scale)
    return (
        frame.iloc[:1_440].to_csv(index=False).encode(),
        frame.iloc[1_440:].to_csv(index=False).encode(),
    )


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    return wait_http(check, timeout, what, interval=0.3)


def _upload(gateway: str, train: bytes, test: bytes, identifier: str, key: str) -> str:
    response = upload_dataset(gateway, train, test, identifier, timeout=60, key=key)
    assert response.status_code in (200, 201, 202), response.text
    return str(response.json()["dataset_id"])


def test_upload_to_served_champion_then_hot_swap_under_load(system: dict[str, Any]) -> None:
    gateway, api, key = system["gateway"], system["api"], system["key"]
    auth = bearer(key)
    identifier = "Station1"
    _wait(lambda: healthy(gateway), 90, "the gateway")
    _wait(lambda: healthy(api), 90, "the inference API")
    # Before any promotion the API is alive but not ready and answers 503 with Retry-After.
    assert httpx.get(f"{api}/readyz").status_code == 503
    train, test = _dataset(seed=1, start="2018-02-05 00:00:00")
    body = forecast_body(test, identifier)
    assert httpx.post(f"{api}/v1/forecast", json=body).status_code == 401  # no key
    early = httpx.post(f"{api}/v1/forecast", json=body, headers=auth)
    assert early.status_code == 503
    assert "retry-after" in early.headers

    _upload(gateway, train, test, identifier, key)
    first = _wait(lambda: champion_run(api, identifier, key), 180, "the first champion")
    response = httpx.post(f"{api}/v1/forecast", json=body, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["x-model-run-id"] == first
    assert set(response.json()["forecast"][0]) >= {"time", "down", "up", "rnti_count"}

    # A client keeps sending requests while a second configuration is promoted.
    with LoadClient(api, body, timeout=10, key=key) as load:
        train2, test2 = _dataset(seed=2, start="2018-03-05 00:00:00", scale=0.2)
        _upload(gateway, train2, test2, identifier, key)
        second = _wait(
            lambda: (run := champion_run(api, identifier, key)) != first and run,
            180,
            "a new champion",
        )
        _wait(lambda: load.seen.get(second, 0) > 0, 30, "answers from the new champion")
    assert load.failures == []
    assert load.seen[first] > 0
    assert load.seen[second] > 0
    assert all(system["supervisor"].alive().values()), system["supervisor"].alive()
