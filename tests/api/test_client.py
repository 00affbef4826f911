"""flts.client against the inference API on a real uvicorn server: DataFrames in and out with
the native route's numbers, intervals as columns, batch, champion and status, typed errors
with the server's reasons, and bounded retries that honour Retry-After; sync and async."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.api import PromotionModelSource, create_app
from flts.client import (
    AsyncFLTSClient,
    FLTSClient,
    Forbidden,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from flts.data.spec import FeatureSpec
from flts.promotion import PromotionStore
from flts.security import create_key
from flts.services.context import ServiceContext
from flts.settings import SecuritySettings

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
