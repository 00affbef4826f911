"""/metrics exposes request, load and serving-model series on a per-app registry; overload
answers 429 and a slow model 504."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from flts.api import PromotionModelSource, create_app
from flts.data.windows import Windows
from flts.models import Forecaster, load_model
from flts.models.baselines import Persistence
from flts.promotion import Promotion, PromotionStore
from flts.services.context import ServiceContext

from .support import CONFIG_HASH, Harness, LiveServer, history_records, make_settings


def test_metrics_text_has_counters_and_the_serving_model(harness: Harness) -> None:
    harness.promote("run-ridge")
    harness.wait_serving("run-ridge")
    assert harness.client.post("/v1/forecast", json={"history": history_records(12)}).is_success
    assert harness.client.post("/v1/forecast", json={"history": []}).status_code == 422
    harness.client.get("/no/such/path")
    response = harness.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for line in (
        'flts_http_requests_total{method="POST",model_type="RIDGE",route="/v1/forecast",'
        'status="200"} 1.0',
        'flts_http_requests_total{method="POST",model_type="RIDGE",route="/v1/forecast",'
        'status="422"} 1.0',
        'flts_http_requests_total{method="GET",model_type="",route="unmatched",status="404"} 1.0',
        'flts_http_request_duration_seconds_count{method="POST",model_type="RIDGE",'
        'route="/v1/forecast",status="200"} 1.0',
        'flts_model_loads_total{identifier="global",model_type="RIDGE"} 1.0',
        'flts_serving_model_info{config_hash="abcdef0123456789",identifier="global",'
        'model_type="RIDGE",run_id="run-ridge"} 1.0',
    ):
        assert line in text, line


def test_two_apps_in_one_process_keep_separate_metrics(
    harness_factory: Callable[..., Harness],
) -> None:
    first, second = harness_factory(), harness_factory()
    first.client.get("/healthz")
    assert 'route="/healthz"' in first.client.get("/metrics").text
    assert 'route="/healthz"' not in second.client.get("/metrics").text


class _Gate(Persistence):
    """Persistence whose predictions wait on ``gate`` once armed (warm-up passes freely)."""

    armed = threading.Event()
    gate = threading.Event()
    entered = threading.Event()

    def _predict(self, windows: Windows) -> np.ndarray:
        if self.armed.is_set():
            self.entered.set()
            self.gate.wait(5.0)
        return super()._predict(windows)


def test_overload_is_429_and_slow_forecasts_504(
    tmp_path: Path, saved_models: dict[str, Path]
) -> None:
    context = ServiceContext(make_settings(tmp_path, max_in_flight=1, request_timeout=0.3))
    promotions = PromotionStore(context.store)

    def load_run(run_id: str) -> Forecaster:
        model = load_model(saved_models["run-persistence"])
        gated = _Gate(model.spec, model.input_scaler, model.target_scaler)
        gated.fitted = True
        return gated

    app = create_app(context, follow_bus=False, source=PromotionModelSource(promotions, load_run))
    body = {"history": history_records(12)}
    results: dict[str, Any] = {}
    try:
        with LiveServer(app) as client:
            promotions.record(
                Promotion(run_id="gated", model_type="PERSISTENCE", config_hash=CONFIG_HASH)
            )
            deadline = threading.Event()
            while client.get("/readyz").status_code != 200:
                assert not deadline.wait(0.01)
            _Gate.armed.set()

            def slow() -> None:
                results["slow"] = client.post("/v1/forecast", json=body)

            thread = threading.Thread(target=slow)
            thread.start()
            assert _Gate.entered.wait(5.0)
            overloaded = client.post("/v1/forecast", json=body)
            thread.join(5.0)
            _Gate.gate.set()
    finally:
        _Gate.armed.clear()
        _Gate.gate.set()
        context.close()
    assert overloaded.status_code == 429
    assert overloaded.headers["Retry-After"] == "1"
    assert results["slow"].status_code == 504
    assert "longer than 0.3 s" in results["slow"].json()["detail"]
