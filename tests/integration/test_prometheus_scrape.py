"""A real Prometheus (Debian ``prometheus`` 2.42) scrapes a running FLTS inference server and
a worker's health server; the checks go through Prometheus's own query API, so they prove the
exposition parses, the series carry the labels dashboards and alerts use, and the values move.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import uvicorn

from flts.api import PromotionModelSource, create_app
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import load_model, model_class
from flts.promotion import Promotion, PromotionStore
from flts.services.context import ServiceContext
from flts.services.health import HealthServer, HealthState
from flts.services.metrics import worker_metrics
from helpers import memory_settings
from servers import Server, free_port
from servers.prometheus import (
    query,
    scrape_config,
    start_prometheus,
    targets_up,
    wait_for_value,
)

RUN_ID = "run-scrape-persistence"


class _Uvicorn:
    """The inference app behind uvicorn on a fixed free loopback port, in a thread."""

    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="scrape-test-api")

    def __enter__(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive(), "api died while starting"
            assert time.monotonic() < deadline, "api did not start"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """An inference server with a saved PERSISTENCE champion, a worker health server, and a
    Prometheus scraping both every 0.5 s."""
    spec = FeatureSpec()
    prepared = prepare(validate_frame(synthetic_traffic(400, seed=3), spec), spec=spec)
    model = model_class("PERSISTENCE")(spec, prepared.input_scaler, prepared.target_scaler)
    model.fit(prepared.train, prepared.validation)
    model.save(tmp_path / RUN_ID)

    context = ServiceContext(memory_settings(tmp_path, serving={"pointer_poll_seconds": 0.1}))
    promotions = PromotionStore(context.store, run_exists=lambda run_id: run_id == RUN_ID)
    source = PromotionModelSource(promotions, lambda _run: load_model(tmp_path / RUN_ID))
    app = create_app(context, replica_id="scrape", follow_bus=False, source=source)
    api_port = free_port()
    health = HealthState()
    health.mark_ready()
    worker_metrics().training_duration.labels("PERSISTENCE").observe(0.3)
    prometheus: Server | None = None
    with _Uvicorn(app, api_port), HealthServer(health) as worker:
        try:
            targets = [f"127.0.0.1:{api_port}", f"127.0.0.1:{worker.port}"]
            prometheus = start_prometheus(
                scrape_config(targets, interval="500ms"), workdir=tmp_path / "prometheus"
            )
            yield {
                "api": f"http://127.0.0.1:{api_port}",
                "prometheus": prometheus.url,
                "promotions": promotions,
                "worker_port": worker.port,
            }
        finally:
            if prometheus is not None:
                prometheus.stop()
            context.close()


def _history() -> list[dict[str, Any]]:
    frame = synthetic_traffic(40, seed=9).iloc[-12:]
    return [
        {str(k): (pd.Timestamp(v).isoformat() if k == "time" else float(v)) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _forecasts(result: list[dict[str, Any]]) -> float:
    return sum(float(r["value"][1]) for r in result)


def test_prometheus_sees_requests_and_the_champion_run_id(system: dict[str, Any]) -> None:
    prom = system["prometheus"]
    wait_for_value(prom, "up", lambda r: len(r) == 2 and all(x["value"][1] == "1" for x in r))
    assert set(targets_up(prom).values()) == {"up"}

    system["promotions"].record(
        Promotion(
            run_id=RUN_ID,
            model_type="PERSISTENCE",
            config_hash="feedc0ffee",
            identifier="global",
            scores={"nrmse": 0.9},
            promoted_at=datetime.now(UTC),
        )
    )
    with httpx.Client(base_url=system["api"], timeout=10) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the champion never loaded"
            time.sleep(0.05)
        forecast_query = 'flts_http_requests_total{route="/v1/forecast",status="200"}'
        before = _forecasts(query(prom, forecast_query))
        for _ in range(3):
            assert client.post("/v1/forecast", json={"history": _history()}).status_code == 200

        after = wait_for_value(prom, forecast_query, lambda r: _forecasts(r) >= before + 3)
        assert {r["metric"]["model_type"] for r in after} == {"PERSISTENCE"}

        # The p95 expression of the alert and the dashboard evaluates on these series: rate()
        # needs the counter to move between two scrapes of an existing series.
        p95_query = (
            "histogram_quantile(0.95, sum by (le) "
            '(rate(flts_http_request_duration_seconds_bucket{route="/v1/forecast"}[1m])))'
        )
        for _ in range(3):
            assert client.post("/v1/forecast", json={"history": _history()}).status_code == 200
        p95 = wait_for_value(prom, p95_query, lambda r: len(r) == 1 and r[0]["value"][1] != "NaN")
        assert 0 < float(p95[0]["value"][1]) < 10

    info = wait_for_value(prom, "flts_serving_model_info", lambda r: len(r) == 1)
    labels = info[0]["metric"]
    assert labels["run_id"] == RUN_ID
    assert labels["model_type"] == "PERSISTENCE"
    assert labels["config_hash"] == "feedc0ffee"

    # The series the p95 alert and dashboard use are queryable as written there.


def test_prometheus_scrapes_a_worker_health_server(system: dict[str, Any]) -> None:
    prom = system["prometheus"]
    port = system["worker_port"]
    # The worker registry is the process's: trainings of other tests in this process add
    # series of their own model types, so the query names the one this system trained.
    result = wait_for_value(
        prom,
        f'flts_training_duration_seconds_count{{instance="127.0.0.1:{port}",'
        'model_type="PERSISTENCE"}',
        lambda r: len(r) == 1,
    )
    assert float(result[0]["value"][1]) >= 1
