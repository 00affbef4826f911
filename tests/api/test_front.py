"""The one forecast path answers every spelling of a request alike, reads streamed bodies
whole (or refuses them at the limit), the app `flts serve` runs counts every route once, and
the default model source starts from the local model cache without MLflow while keeping the
stale-pointer fallback."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn

from flts.api import ModelHolder, PromotionModelSource, TrackingModelSource, create_app
from flts.api.asgi import middleware_stack
from flts.api.metrics import ApiMetrics
from flts.api.watcher import ChampionWatcher
from flts.models import load_model
from flts.promotion import Promotion, PromotionStore
from flts.services.context import ServiceContext
from flts.settings import SecuritySettings

from .support import CONFIG_HASH, Harness, LiveServer, Runs, history_records, make_settings


def _chunks(body: bytes, size: int = 512) -> Iterator[bytes]:
    """A body streamed in pieces (chunked transfer, no content-length)."""
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _ready(harness: Harness) -> None:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")


def test_fast_answers_equal_the_reference_route(harness: Harness) -> None:
    _ready(harness)
    records = history_records(12)
    fast = harness.client.post("/v1/forecast", json={"history": records, "horizon": 1})
    # "false" in an extra column: ignored, the same answer.
    slow_records = [{**row, "station_note": "false"} for row in records]
    slow = harness.client.post("/v1/forecast", json={"history": slow_records, "horizon": 1})
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    for header in ("content-type", "x-model-run-id", "x-config-hash"):
        assert fast.headers[header] == slow.headers[header]
    batch = harness.client.post(
        "/v1/forecast/batch", json={"requests": [{"history": records}, {"history": records}]}
    )
    slow_batch = harness.client.post(
        "/v1/forecast/batch",
        json={"requests": [{"history": slow_records}, {"history": slow_records}]},
    )
    assert batch.status_code == slow_batch.status_code == 200
    # One model call for both windows vs one per request: the same answers up to
    # floating-point summation order.
    for got, want in zip(batch.json()["results"], slow_batch.json()["results"], strict=True):
        _assert_same_answer(got, want)
        _assert_same_answer(got, fast.json())


def _assert_same_answer(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["model"] == want["model"]
    assert len(got["forecast"]) == len(want["forecast"])
    for step, expected in zip(got["forecast"], want["forecast"], strict=True):
        assert step.keys() == expected.keys()
        assert step["time"] == expected["time"]
        for key in step.keys() - {"time"}:
            assert step[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12)


def test_streamed_bodies_are_read_whole_or_refused(harness_factory: Any) -> None:
    harness: Harness = harness_factory(max_history_rows=20)
    _ready(harness)
    body = orjson.dumps({"history": history_records(12)})
    streamed = harness.client.post(
        "/v1/forecast", content=_chunks(body), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 200, streamed.text
    assert streamed.json() == harness.client.post("/v1/forecast", content=body).json()
    # Over the byte limit while streaming: 413 as soon as the limit is crossed.
    limit = harness.context.settings.serving.max_history_rows * 1024 + 64 * 1024
    big = b" " * (limit + 10) + body
    response = harness.client.post("/v1/forecast", content=_chunks(big, 64 * 1024))
    assert response.status_code == 413
    assert f"request body is over the {limit}-byte limit" in response.text


def test_what_flts_serve_runs(tmp_path: Path, runs: Runs) -> None:
    """What `flts serve` runs is what create_app returns: forecasts are counted once, every
    other route still reaches FastAPI's routes and handlers."""
    context = ServiceContext(make_settings(tmp_path))
    promotions = PromotionStore(context.store, run_exists=runs.exists)
    app = create_app(
        context,
        replica_id="served",
        follow_bus=False,
        source=PromotionModelSource(promotions, runs.load),
    )
    try:
        with LiveServer(app) as client:
            assert client.get("/readyz").status_code == 503
            promotions.record(
                Promotion(run_id="run-ridge", model_type="RIDGE", config_hash=CONFIG_HASH)
            )
            harness = Harness(client, app, context, promotions, runs)
            harness.wait_serving("run-ridge")
            ok = client.post("/v1/forecast", json={"history": history_records(12)})
            assert ok.status_code == 200
            assert ok.headers["x-model-run-id"] == "run-ridge"
            bad = client.post("/v1/forecast", json={"history": history_records(3)})
            assert bad.status_code == 422
            assert "too few rows: 3" in bad.text
            assert client.post("/v1/forecast", content=b"{").status_code == 422
            assert client.get("/no/such/path").status_code == 404
            text = client.get("/metrics").text
            assert (
                'flts_http_requests_total{method="POST",model_type="RIDGE",route="/v1/forecast",'
                'status="200"} 1.0'
            ) in text
            counted = [
                line
                for line in text.splitlines()
                if line.startswith("flts_http_requests_total{")
                and 'route="/v1/forecast",status="422"}' in line
            ]
            assert len(counted) == 2, counted  # model type RIDGE (too few rows) and "" (JSON)
    finally:
        context.close()


def test_cold_start_from_the_cache_then_the_full_pointer_check(
    tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    """The first read trusts a pointer whose model is cached (no tracker, hence no MLflow
    import); the next poll runs the full check, which falls back past a run the tracking
    store does not know, exactly as the reference source does."""
    settings = make_settings(tmp_path)
    writer = ServiceContext(settings)
    reader = ServiceContext(settings)
    try:
        logged = writer.tracker.log_training_run(
            load_model(saved_models["run-ridge"]),
            identifier="global",
            config_hash=CONFIG_HASH,
            correlation_id=str(uuid.uuid4()),
        )
        writer.promotions.record(
            Promotion(run_id=logged, model_type="RIDGE", config_hash=CONFIG_HASH)
        )
        ghost = "cached-run-mlflow-never-saw"  # e.g. a run deleted after it was cached
        source = TrackingModelSource(reader)
        shutil.copytree(saved_models["run-persistence"], source.cache_dir / ghost)
        PromotionStore(writer.store).record(
            Promotion(run_id=ghost, model_type="PERSISTENCE", config_hash=CONFIG_HASH)
        )

        holder = ModelHolder(source)
        watcher = ChampionWatcher(holder, poll_seconds=60.0)
        watcher.poll_once()
        served_first = holder.get("global")
        assert served_first is not None
        assert served_first.promotion.run_id == ghost
        assert "tracker" not in reader.__dict__, "the cached start must not open MLflow"
        assert str(source.etag("global")).endswith("+unverified")

        watcher.poll_once()  # the deferred check: the ghost run does not exist
        after = holder.get("global")
        assert after is not None
        assert after.promotion.run_id == logged
        assert "tracker" in reader.__dict__
        assert not str(source.etag("global")).endswith("+unverified")
    finally:
        reader.close()
        writer.close()


def test_uvicorn_runs_the_app_and_its_layers_as_asgi3(tmp_path: Path, runs: Runs) -> None:
    """uvicorn tells ASGI 3 apps from ASGI 2 ones by whether ``__call__`` is a coroutine
    function: the replica and each public layer must stay one (the layers inside hand each
    other plain functions returning coroutines, which uvicorn would take for ASGI 2)."""
    context = ServiceContext(make_settings(tmp_path))
    promotions = PromotionStore(context.store, run_exists=runs.exists)
    app = create_app(context, follow_bus=False, source=PromotionModelSource(promotions, runs.load))
    outer, guarded = middleware_stack(app.framework, ApiMetrics(), SecuritySettings())
    try:
        for candidate in (app, outer, guarded):
            config = uvicorn.Config(candidate, log_config=None)
            config.load()
            assert config.interface == "asgi3", type(candidate).__name__
    finally:
        context.close()
