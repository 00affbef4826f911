"""flts.client against the inference API and the gateway on real uvicorn servers: DataFrames
in and out with the native route's numbers, intervals as columns, batch, champion and status,
typed errors with the server's reasons, bounded retries that honour Retry-After, bulk uploads
(identifier column or one file per station, 202 an answer that is not retried) and many
stations' observations; sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from flts.api import PromotionModelSource, create_app
from flts.client import (
    AsyncFLTSClient,
    BulkUpload,
    FLTSClient,
    Forbidden,
    NotFound,
    StationsObserved,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from flts.data.spec import FeatureSpec
from flts.data.synthetic import synthetic_traffic
from flts.fleet.groups import GROUPS_PREFIX
from flts.promotion import PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import SecuritySettings
from helpers import memory_settings

from .support import CONFIG_HASH, Harness, LiveServer, history_records, make_settings

SPEC = FeatureSpec()
STATION = "PobleSec"


def _client(harness: Harness, **options: object) -> FLTSClient:
    return FLTSClient(str(harness.client.base_url), None, **options)  # type: ignore[arg-type]


def _ready(harness: Harness) -> None:
    harness.promote("run-ridge", STATION)
    harness.wait_serving("run-ridge", STATION)


def _history(rows: int = 10, offset: int = 0) -> pd.DataFrame:
    frame = pd.DataFrame(history_records(rows, offset=offset))
    return frame.assign(time=pd.to_datetime(frame["time"])).set_index("time")


def test_forecast_is_the_native_answer_as_a_frame(harness: Harness) -> None:
    _ready(harness)
    history = _history()
    records = history_records(10)
    native = harness.client.post(
        "/v1/forecast", json={"identifier": STATION, "history": records, "intervals": [80]}
    ).json()
    with _client(harness) as client:
        frame = client.forecast(STATION, history, intervals=[80])
    [step] = native["forecast"]
    [band] = native["intervals"]["80"]
    assert list(frame.index.names) == ["step", "time"]
    assert frame.index[0] == (1, pd.Timestamp(step["time"]))
    for target in SPEC.targets:
        assert frame[target].iloc[0] == step[target]
        assert frame[f"{target}_lower_80"].iloc[0] == band[target][0]
        assert frame[f"{target}_upper_80"].iloc[0] == band[target][1]
    assert frame.attrs["run_id"] == "run-ridge"
    assert frame.attrs["config_hash"] == CONFIG_HASH
    assert frame.attrs["model"] == native["model"]


def test_batch_champion_models_and_status(harness: Harness) -> None:
    with _client(harness) as client:
        waiting = client.status()
        assert waiting["ready"] is False
        assert waiting["problems"]
        _ready(harness)
        histories = [_history(), _history(12, offset=30)]
        frames = client.forecast_batch(histories, STATION)
        for history, frame in zip(histories, frames, strict=True):
            single = client.forecast(STATION, history)
            pd.testing.assert_frame_equal(frame, single)
        assert client.champion(STATION)["run_id"] == "run-ridge"
        assert [m["identifier"] for m in client.models()] == [STATION]
        status = client.status()
        assert status["ready"] is True
        assert status["models"] == {STATION: "run-ridge"}


def test_refusals_are_typed_with_every_reason(harness: Harness) -> None:
    _ready(harness)
    history = _history().reset_index()
    history.loc[3, "down"] = float("nan")
    history.loc[5, "up"] = float("nan")
    with _client(harness) as client, pytest.raises(ValidationFailed) as refused:
        client.forecast(STATION, history)
    assert refused.value.status == 422
    assert len(refused.value.problems) == 2
    assert "history[3]" in refused.value.problems[0]
    assert "'up'" in refused.value.problems[1]


def test_unavailable_is_retried_after_retry_after_then_raised(harness: Harness) -> None:
    with _client(harness, retries=2, max_retry_wait=0.2) as client:
        started = time.monotonic()
        with pytest.raises(Unavailable) as unavailable:
            client.forecast(STATION, _history())
        waited = time.monotonic() - started
    assert unavailable.value.status == 503
    assert unavailable.value.retry_after == 1.0
    assert waited >= 0.4  # two waits, each Retry-After capped at max_retry_wait


def test_a_champion_arriving_during_the_retries_answers(harness: Harness) -> None:
    promoter = threading.Timer(0.5, lambda: harness.promote("run-ridge", STATION))
    promoter.start()
    try:
        with _client(harness, retries=20, max_retry_wait=0.5) as client:
            frame = client.forecast(STATION, _history())
    finally:
        promoter.cancel()
    assert frame.attrs["run_id"] == "run-ridge"


def test_async_client_answers_as_the_sync_one(harness: Harness) -> None:
    _ready(harness)
    history = _history()
    with _client(harness) as client:
        expected = client.forecast(STATION, history, intervals=[80])

    async def run() -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, object]]:
        async with AsyncFLTSClient(str(harness.client.base_url), None) as client:
            single = await client.forecast(STATION, history, intervals=[80])
            batch = await client.forecast_batch([history], STATION, intervals=[80])
            champion = await client.champion(STATION)
            return single, batch, champion

    single, batch, champion = asyncio.run(run())
    pd.testing.assert_frame_equal(single, expected)
    pd.testing.assert_frame_equal(batch[0], expected)
    assert champion["run_id"] == "run-ridge"


@pytest.fixture
def keyed(tmp_path: Path, harness: Harness) -> Iterator[tuple[str, dict[str, str]]]:
    """A replica of the same promotions behind API keys: its URL and a key per scope."""
    path = tmp_path / "keys.json"
    keys = {scope: create_key(path, scope, [scope]) for scope in ("forecast", "upload")}
    settings = make_settings(tmp_path).model_copy(
        update={"security": SecuritySettings(keys_file=path)}
    )
    context = ServiceContext(settings)
    promotions = PromotionStore(harness.context.store, run_exists=harness.runs.exists)
    source = PromotionModelSource(promotions, harness.runs.load)
    app = create_app(context, replica_id="keyed", follow_bus=False, source=source)
    with LiveServer(app) as http:
        yield str(http.base_url), keys
    context.close()


def test_keys_are_sent_and_refusals_typed(
    harness: Harness, keyed: tuple[str, dict[str, str]]
) -> None:
    _ready(harness)
    url, keys = keyed
    with FLTSClient(url, None, retries=0) as anonymous, pytest.raises(Unauthorized):
        anonymous.models()
    with FLTSClient(url, None, api_key=keys["upload"]) as uploader, pytest.raises(Forbidden):
        uploader.models()
    with FLTSClient(url, None, api_key=keys["forecast"], retries=10) as reader:
        harness.wait_for(lambda: reader.status()["ready"] is True)
        assert reader.forecast(STATION, _history()).attrs["run_id"] == "run-ridge"


# ----------------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    """A gateway app behind a real uvicorn server: its URL, its context, a raw HTTP client."""

    url: str
    context: ServiceContext
    http: httpx.Client

    def client(self, **options: object) -> FLTSClient:
        return FLTSClient(None, self.url, **options)  # type: ignore[arg-type]

    def groups(self) -> list[str]:
        return list(self.context.store.list(GROUPS_PREFIX.rstrip("/")))


def _start_gateway(tmp_path: Path, *, bus_down: bool = False) -> Iterator[Gateway]:
    context = ServiceContext(memory_settings(tmp_path))
    for station in ("S1", "S2"):  # observations are taken for stations with a champion
        context.store.put_json(PromotionStore.pointer_key(station), {"run_id": "run-ridge"})
    if bus_down:
        context.bus.close()  # publishing fails with BusError, as with a broker that is gone
    with LiveServer(create_gateway_app(context)) as http:
        yield Gateway(str(http.base_url), context, http)
    context.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(tmp_path)


@pytest.fixture
def gateway_without_bus(tmp_path: Path) -> Iterator[Gateway]:
    yield from _start_gateway(tmp_path, bus_down=True)


def _traffic(seed: int, rows: int = 300) -> pd.DataFrame:
    return synthetic_traffic(rows, seed=seed)


def _fleet(stations: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One CSV's rows for many stations, each row's station in column ``cell``."""
    return pd.concat([frame.assign(cell=name) for name, frame in stations.items()])


def _by_station(result: BulkUpload) -> dict[str, dict[str, Any]]:
    return {meta["identifier"]: meta for meta in result["datasets"]}


def test_upload_fleet_splits_one_csv_by_its_identifier_column(gateway: Gateway) -> None:
    full = {name: _traffic(seed, rows=400) for seed, name in enumerate(("A", "B"))}
    train = _fleet({**{n: f.iloc[:300] for n, f in full.items()}, "Short": _traffic(9, 40)})
    test = _fleet({n: f.iloc[300:] for n, f in full.items()})
    with gateway.client() as client:
        result = client.upload_fleet(
            train, test.to_csv(index=False).encode(), identifier_column="cell"
        )
        listed = client.datasets()
    assert result["accepted"] == 2
    metas = _by_station(result)
    assert set(metas) == {"A", "B"}
    assert all(meta["group"] == result["group"] for meta in metas.values())
    assert all(meta["test"] is not None for meta in metas.values())
    [rejected] = result["rejected"]
    assert rejected["identifier"] == "Short"
    assert rejected["problems"]
    assert result["pending"] == []
    assert "detail" not in result
    assert sorted(meta["dataset_id"] for meta in listed) == sorted(
        str(meta["dataset_id"]) for meta in metas.values()
    )
    assert gateway.groups() == [f"groups/{result['group']}.json"]


def test_upload_stations_names_each_station_by_its_key_or_file_stem(
    gateway: Gateway, tmp_path: Path
) -> None:
    stored = tmp_path / "export-2.csv"  # a path under another name: the key names the station
    _traffic(2).to_csv(stored, index=False)
    for name, seed in (("Gracia", 3), ("Sants", 4)):
        _traffic(seed).to_csv(tmp_path / f"{name}.csv", index=False)
    _traffic(5).iloc[200:].to_csv(tmp_path / "Gracia_test.csv", index=False)
    with gateway.client() as client:
        keyed = client.upload_stations(
            {"ElBorn": _traffic(1), "LesCorts": stored},
            {"ElBorn": _traffic(6).iloc[200:].to_csv(index=False).encode()},
            horizon=2,
        )
        named = client.upload_stations(
            [tmp_path / "Gracia.csv", tmp_path / "Sants.csv"], [tmp_path / "Gracia_test.csv"]
        )
    metas = _by_station(keyed)
    assert set(metas) == {"ElBorn", "LesCorts"}
    assert metas["ElBorn"]["test"] == {**metas["ElBorn"]["test"], "filename": "ElBorn_test.csv"}
    assert metas["LesCorts"]["train"] == {**metas["LesCorts"]["train"], "filename": "LesCorts.csv"}
    assert metas["LesCorts"]["test"] is None
    assert {meta["horizon"] for meta in metas.values()} == {2}
    metas = _by_station(named)
    assert set(metas) == {"Gracia", "Sants"}
    assert metas["Gracia"]["test"] is not None
    assert metas["Sants"]["test"] is None
    assert named["group"] != keyed["group"]


def test_one_station_of_files_is_refused_before_anything_is_sent(gateway: Gateway) -> None:
    with gateway.client() as client:
        with pytest.raises(ValueError, match="upload"):
            client.upload_stations({"ElBorn": _traffic(1)})
        with pytest.raises(TypeError):
            client.upload_stations("ElBorn.csv")
        assert client.datasets() == []


def test_bulk_refusals_are_typed_with_every_station(gateway: Gateway) -> None:
    fleet = _fleet({"Short": _traffic(1, 40), "bad name": _traffic(2)})
    with gateway.client() as client:
        with pytest.raises(ValidationFailed) as none_passed:
            client.upload_fleet(fleet, identifier_column="cell")
        with pytest.raises(ValidationFailed) as no_column:
            client.upload_fleet(fleet, identifier_column="station")
        assert client.datasets() == []
    assert none_passed.value.status == 422
    assert any(p.startswith("Short:") for p in none_passed.value.problems)
    assert any(p.startswith("bad name:") for p in none_passed.value.problems)
    assert "'station'" in " ".join(no_column.value.problems)


def test_a_pending_announcement_is_an_answer_and_not_retried(
    gateway_without_bus: Gateway,
) -> None:
    fleet = _fleet({"A": _traffic(1), "B": _traffic(2)})
    with gateway_without_bus.client(retries=3, max_retry_wait=0.1) as client:
        result = client.upload_fleet(fleet, identifier_column="cell")
    assert result["accepted"] == 2
    assert sorted(result["pending"]) == sorted(
        str(meta["dataset_id"]) for meta in result["datasets"]
    )
    assert "announced" in result["detail"]
    assert gateway_without_bus.groups() == [f"groups/{result['group']}.json"]  # one upload


def _rows(start: int, count: int) -> pd.DataFrame:
    return synthetic_traffic(100, seed=8).iloc[start : start + count]


def test_fleet_observations_store_or_refuse_each_station_whole(gateway: Gateway) -> None:
    broken = _rows(0, 3).astype({"down": object})
    broken.loc[broken.index[1], "down"] = "lots"
    with gateway.client() as client:
        answer = client.post_fleet_observations(
            {"S1": _rows(0, 4), "S2": broken, "Unknown": _rows(0, 2)}
        )
        again = client.post_fleet_observations({"S1": _rows(0, 4), "S2": _rows(0, 3)})
    assert (answer["stored"], answer["rejected"], answer["accepted"]) == (1, 2, 4)
    stored = {s["identifier"]: s for s in answer["stations"] if s["status"] == "stored"}
    refused = {s["identifier"]: s for s in answer["stations"] if s["status"] == "rejected"}
    assert set(stored) == {"S1"}
    assert stored["S1"]["newest"] == pd.Timestamp(_rows(3, 1)["time"].iloc[0]).isoformat()
    assert {name: s["http_status"] for name, s in refused.items()} == {"S2": 422, "Unknown": 404}
    assert any("down" in p for p in refused["S2"]["problems"])
    assert (again["stored"], again["accepted"], again["duplicates"]) == (2, 3, 4)
    assert gateway.http.get("/v1/observations/S2").json()["count"] == 3


def test_fleet_observations_storing_nothing_are_typed_refusals(gateway: Gateway) -> None:
    broken = _rows(0, 2).astype({"up": object})
    broken.loc[broken.index[0], "up"] = "x"
    with gateway.client() as client:
        with pytest.raises(NotFound):
            client.post_fleet_observations({"Nobody": _rows(0, 2)})
        with pytest.raises(ValidationFailed) as refused:
            client.post_fleet_observations({"S1": broken, "Nobody": _rows(0, 2)})
    problems = refused.value.problems
    assert any(p.startswith("S1:") for p in problems)
    assert any(p.startswith("Nobody:") for p in problems)
    assert gateway.http.get("/v1/observations/S1").json()["count"] == 0


def test_async_bulk_calls_answer_as_the_sync_ones(gateway: Gateway) -> None:
    fleet = _fleet({"A": _traffic(1), "B": _traffic(2)})

    async def run() -> tuple[BulkUpload, BulkUpload, StationsObserved]:
        async with AsyncFLTSClient(None, gateway.url) as client:
            by_column = await client.upload_fleet(fleet, identifier_column="cell")
            by_file = await client.upload_stations({"C": _traffic(3), "D": _traffic(4)})
            observed = await client.post_fleet_observations({"S1": _rows(0, 5)})
            return by_column, by_file, observed

    by_column, by_file, observed = asyncio.run(run())
    assert set(_by_station(by_column)) == {"A", "B"}
    assert set(_by_station(by_file)) == {"C", "D"}
    assert (observed["stored"], observed["accepted"]) == (1, 5)
    with gateway.client() as client:
        assert len(client.datasets()) == 4
