"""Helpers for the inference API tests: saved-run bookkeeping, a running-app harness,
request rows and the offline reference forecast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import uvicorn
from starlette.types import ASGIApp

from flts.api import InferenceApp
from flts.api.forms import ForecastCall, decode, row_windows
from flts.data import FeatureSpec, Windows, last_window
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import ModelError
from flts.models import Forecaster, load_model
from flts.promotion import Promotion, PromotionStore
from flts.services.context import ServiceContext
from flts.settings import ServingSettings, Settings
from helpers import memory_settings

CONFIG_HASH = "abcdef0123456789"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class LiveServer:
    """The app behind a real uvicorn server on a free loopback port, in a thread: requests
    travel real HTTP (headers, body limits, concurrency) and the lifespan runs as in
    ``flts serve``."""

    def __init__(self, app: ASGIApp) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api-test-server")

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 10.0
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0)
        return self.client

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10.0)


@dataclass
class Runs:
    """Saved model directories by run id; ``deleted`` runs fail ``run_exists``."""

    dirs: dict[str, Path]
    deleted: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    def exists(self, run_id: str) -> bool:
        self.checks.append(run_id)
        return run_id in self.dirs and run_id not in self.deleted

    def load(self, run_id: str) -> Forecaster:
        self.loads.append(run_id)
        if run_id not in self.dirs:
            raise ModelError(f"run {run_id} has no model")
        return load_model(self.dirs[run_id])


def make_settings(tmp_path: Path, **serving: Any) -> Settings:
    defaults: dict[str, Any] = {"pointer_poll_seconds": 0.05, "max_history_rows": 200}
    return memory_settings(tmp_path, serving=ServingSettings(**{**defaults, **serving}))


@dataclass
class Harness:
    """A running app plus the handles a test needs to drive promotions."""

    client: httpx.Client
    app: InferenceApp
    context: ServiceContext
    promotions: PromotionStore
    runs: Runs

    def promote(self, run_id: str, identifier: str = "global", minutes: int = 0) -> Promotion:
        model_type = "RIDGE" if "ridge" in run_id else "PERSISTENCE"
        return self.promotions.record(
            Promotion(
                run_id=run_id,
                model_type=model_type,
                config_hash=CONFIG_HASH,
                identifier=identifier,
                scores={"nrmse": 0.8},
                promoted_at=T0 + timedelta(minutes=minutes),
            )
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.01)

    def serving_run(self, identifier: str = "global") -> str | None:
        response = self.client.get("/v1/models/champion", params={"identifier": identifier})
        return str(response.json()["run_id"]) if response.status_code == 200 else None

    def wait_serving(self, run_id: str, identifier: str = "global") -> None:
        self.wait_for(lambda: self.serving_run(identifier) == run_id)


def history_records(rows: int = 12, *, offset: int = 0) -> list[dict[str, Any]]:
    """Rows of synthetic traffic as JSON records (ISO times, floats, one extra column)."""
    frame = synthetic_traffic(1_300, seed=5).iloc[1_000 + offset : 1_000 + offset + rows]
    records: list[dict[str, Any]] = []
    for row in frame.to_dict(orient="records"):
        record: dict[str, Any] = {
            str(k): (float(v) if k != "time" else pd.Timestamp(v).isoformat())
            for k, v in row.items()
        }
        record["station_note"] = "extra columns are ignored"
        records.append(record)
    return records


def request_windows(documents: list[Any], spec: FeatureSpec) -> Windows:
    """The windows the forecast route validates ``documents`` into (request bodies as JSON
    objects, all for a model with ``spec``); raises ``RejectedError`` for a refused one."""
    calls = [decode(ForecastCall, orjson.dumps(document)) for document in documents]
    return row_windows(calls, spec)


def offline_forecast(model_dir: Path, records: list[dict[str, Any]]) -> np.ndarray:
    """The saved model's own ``predict`` on the last window of ``records`` (clipped at 0 as
    the evaluator and the API do)."""
    model = load_model(model_dir)
    spec = model.spec
    frame = pd.DataFrame(records)
    values = frame[list(spec.inputs)].to_numpy(np.float64)
    times = pd.to_datetime(frame["time"]).to_numpy(dtype="datetime64[ns]")
    prediction: np.ndarray = model.predict(last_window(values, times, spec))[0]
    clipped: np.ndarray = np.clip(prediction, 0.0, None)
    return clipped
