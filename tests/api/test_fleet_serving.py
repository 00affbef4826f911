"""Serving a fleet: the bounded champion cache (LRU by bytes, loads on demand with one load
per identifier), cold-load metrics, and shards (421 for another shard's identifier, whose
promotions the replica ignores)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx

from flts.api import ModelHolder, PromotionModelSource, RefreshOutcome
from flts.events import ModelSelected, new_event
from flts.models import Forecaster
from flts.models.base import directory_bytes
from flts.promotion import Promotion, PromotionStore
from flts.shards import shard_of
from flts.storage import ObjectStore

from .support import CONFIG_HASH, T0, Harness, Runs, history_records, request_windows


def _ridge_bytes(runs: Runs) -> int:
    return directory_bytes(runs.dirs["run-ridge"])


def _promote(promotions: PromotionStore, identifier: str, run_id: str = "run-ridge") -> None:
    promotions.record(
        Promotion(
            run_id=run_id,
            model_type="RIDGE" if "ridge" in run_id else "PERSISTENCE",
            config_hash=CONFIG_HASH,
            identifier=identifier,
            promoted_at=T0 + timedelta(seconds=len(promotions.identifiers())),
        )
    )


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not exported"
    return float(match.group(1))


def _forecast(client: httpx.Client, identifier: str) -> httpx.Response:
    return client.post(
        "/v1/forecast", json={"identifier": identifier, "history": history_records(12)}
    )


def test_lru_evicts_by_bytes_and_reloads_on_demand(runs: Runs) -> None:
    promotions = PromotionStore(ObjectStore(f"memory://{uuid.uuid4().hex}"), runs.exists)
    size = _ridge_bytes(runs)
    holder = ModelHolder(PromotionModelSource(promotions, runs.load), max_resident_bytes=2 * size)
    for identifier in ("a", "b", "c"):
        _promote(promotions, identifier)
    assert holder.refresh("a") is RefreshOutcome.SWAPPED
    assert holder.refresh("b") is RefreshOutcome.SWAPPED
    assert holder.resident_bytes == 2 * size
    # The cache is full: a poll leaves "c" for its first request instead of evicting.
    assert holder.refresh("c") is RefreshOutcome.NOT_RESIDENT
    assert set(holder.snapshot()) == {"a", "b"}
    assert holder.get("a") is not None  # "a" is now used more recently than "b"

    loaded = holder.cold_load("c").result(timeout=10)
    assert loaded is not None
    assert loaded.identifier == "c"
    assert set(holder.snapshot()) == {"a", "c"}  # "b" was the least recently used
    assert holder.resident_bytes <= 2 * size
    assert holder.evictions == 1

    # A request that holds "a" keeps it through its eviction and finishes on it.
    in_flight = holder.get("c")
    assert in_flight is not None
    holder.get("a")
    again = holder.cold_load("b").result(timeout=10)  # reloaded on demand, evicts "c"
    assert again is not None
    assert set(holder.snapshot()) == {"a", "b"}
    windows = request_windows([{"history": history_records(12)}], in_flight.spec)
    assert in_flight.model.predict(windows).shape[0] == 1
    assert runs.loads.count("run-ridge") == 4  # a, b, c, and b once more
    assert holder.cold_loads == 2


def test_unbounded_holder_loads_everything(runs: Runs) -> None:
    promotions = PromotionStore(ObjectStore(f"memory://{uuid.uuid4().hex}"), runs.exists)
    holder = ModelHolder(PromotionModelSource(promotions, runs.load), max_resident_bytes=0)
    for identifier in ("a", "b", "c"):
        _promote(promotions, identifier)
        assert holder.refresh(identifier) is RefreshOutcome.SWAPPED
    assert not holder.bounded
    assert set(holder.snapshot()) == {"a", "b", "c"}
    assert holder.evictions == 0


def test_cold_identifiers_are_served_and_measured(
    harness_factory: Callable[..., Harness], runs: Runs
) -> None:
    harness = harness_factory(max_resident_bytes=_ridge_bytes(runs))  # one champion fits
    _promote(harness.promotions, "a")
    _promote(harness.promotions, "b")
    polls = harness.app.watcher.polls
    harness.wait_for(lambda: harness.app.watcher.polls >= polls + 2)
    resident = set(harness.app.holder.snapshot())
    assert len(resident) == 1  # the poll loaded one and left the other for its request
    [warm] = resident
    cold = "b" if warm == "a" else "a"

    for identifier in (cold, warm):  # each evicts the other, and is loaded on demand
        response = _forecast(harness.client, identifier)
        assert response.status_code == 200, response.text
        assert set(harness.app.holder.snapshot()) == {identifier}

    metrics = harness.client.get("/metrics").text
    assert _metric(metrics, "flts_model_cold_load_seconds_count") == 2
    assert _metric(metrics, "flts_model_evictions_total") == 2
    assert _metric(metrics, "flts_models_resident") == 1
    assert _metric(metrics, "flts_models_resident_bytes") <= _ridge_bytes(runs)
    assert _metric(metrics, "flts_models_resident_limit_bytes") == _ridge_bytes(runs)


def test_a_request_without_identifier_is_not_answered_by_the_one_model_in_memory(
    harness_factory: Callable[..., Harness], runs: Runs
) -> None:
    """Two stations, one in memory: a forecast without an identifier must not silently use
    it for the other (it is ambiguous, as with both in memory), and once "global" exists but
    was dropped, it is loaded for the request rather than answered by a station's model."""
    harness = harness_factory(max_resident_bytes=_ridge_bytes(runs))  # one champion fits
    _promote(harness.promotions, "a")
    _promote(harness.promotions, "b")
    polls = harness.app.watcher.polls
    harness.wait_for(lambda: harness.app.watcher.polls >= polls + 2)
    assert len(harness.app.holder.snapshot()) == 1
    response = harness.client.post("/v1/forecast", json={"history": history_records(12)})
    assert response.status_code == 422, response.text
    assert "'a', 'b'" in response.text

    _promote(harness.promotions, "global")
    harness.wait_for(lambda: "global" in harness.app.holder.dropped())
    response = harness.client.post("/v1/forecast", json={"history": history_records(12)})
    assert response.status_code in (200, 503), response.text
    harness.wait_for(lambda: "global" in harness.app.holder.snapshot())
    response = harness.client.post("/v1/forecast", json={"history": history_records(12)})
    assert response.status_code == 200, response.text
    assert response.json()["model"]["identifier"] == "global"


def _slow(runs: Runs, run_id: str, seconds: float) -> Callable[[str], Forecaster]:
    def load(requested: str) -> Forecaster:
        if requested == run_id:
            time.sleep(seconds)
        return runs.load(requested)

    return load


def _cold_replica(
    harness_factory: Callable[..., Harness], runs: Runs, delay: float, **serving: float
) -> Harness:
    """A replica whose cache holds ``warm`` (RIDGE) and is full, so ``cold`` (PERSISTENCE,
    loading in ``delay`` seconds) is only loaded by a request."""
    harness = harness_factory(
        max_resident_bytes=_ridge_bytes(runs),
        load=_slow(runs, "run-persistence", delay),
        **serving,
    )
    _promote(harness.promotions, "warm")
    harness.wait_for(lambda: harness.app.holder.get("warm") is not None)
    _promote(harness.promotions, "cold", "run-persistence")
    polls = harness.app.watcher.polls
    harness.wait_for(lambda: harness.app.watcher.polls >= polls + 2)
    assert "cold" not in harness.app.holder.snapshot()
    return harness


def test_concurrent_cold_requests_share_one_load(
    harness_factory: Callable[..., Harness], runs: Runs
) -> None:
    harness = _cold_replica(harness_factory, runs, delay=0.5)
    start = threading.Barrier(16)

    def request(_: int) -> httpx.Response:
        start.wait()
        return _forecast(harness.client, "cold")

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(request, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert {r.headers["X-Model-Run-Id"] for r in responses} == {"run-persistence"}
    assert runs.loads.count("run-persistence") == 1
    assert runs.checks.count("run-persistence") == 1  # one pointer read, not sixteen
    assert harness.app.holder.cold_loads == 1


def test_a_slow_cold_load_answers_503_with_retry_after_and_goes_on(
    harness_factory: Callable[..., Harness], runs: Runs
) -> None:
    harness = _cold_replica(harness_factory, runs, delay=1.5, cold_load_wait_seconds=0.1)
    response = _forecast(harness.client, "cold")
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    assert "being loaded" in response.json()["detail"]
    harness.wait_for(lambda: _forecast(harness.client, "cold").status_code == 200, timeout=10)
    assert runs.loads.count("run-persistence") == 1


def _identifiers_by_shard(count: int) -> dict[int, str]:
    found: dict[int, str] = {}
    for number in range(1000):
        found.setdefault(shard_of(f"cell-{number}", count), f"cell-{number}")
        if len(found) == count:
            return found
    raise AssertionError("sha1 never reached every shard")


def test_a_shard_serves_its_identifiers_and_refuses_others_with_421(
    harness_factory: Callable[..., Harness],
) -> None:
    names = _identifiers_by_shard(2)
    mine, theirs = names[0], names[1]
    harness = harness_factory(shard="0/2", follow_bus=True)
    harness.promote("run-ridge", mine)
    harness.promote("run-persistence", theirs)
    harness.wait_serving("run-ridge", mine)
    # A model-selected event for another shard's identifier is ignored too.
    event = new_event(
        ModelSelected(
            run_id="run-persistence", model_type="PERSISTENCE", scores={}, promoted_at=T0
        ),
        identifier=theirs,
        config_hash=CONFIG_HASH,
    )
    harness.context.bus.publish("model-selected", event)
    polls = harness.app.watcher.polls
    harness.wait_for(lambda: harness.app.watcher.polls >= polls + 3)

    assert set(harness.app.holder.snapshot()) == {mine}
    assert "run-persistence" not in harness.runs.loads
    assert "run-persistence" not in harness.runs.checks  # its pointer was never judged
    assert _forecast(harness.client, mine).status_code == 200
    refused = _forecast(harness.client, theirs)
    assert refused.status_code == 421, refused.text
    assert "shard 0 of 2" in refused.json()["detail"]
    champion = harness.client.get("/v1/models/champion", params={"identifier": theirs})
    assert champion.status_code == 421


def test_an_explicit_shard_list(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(shard="north,south")
    harness.promote("run-ridge", "north")
    harness.promote("run-ridge", "east")
    harness.wait_serving("run-ridge", "north")
    assert set(harness.app.holder.snapshot()) == {"north"}
    refused = _forecast(harness.client, "east")
    assert refused.status_code == 421
    assert "2 listed identifier(s)" in refused.json()["detail"]
