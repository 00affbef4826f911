"""The default model source end to end: a run logged to MLflow (SQLite) and promoted is
downloaded, warmed up and served, with no injected source."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np

from flts.api import create_app
from flts.data.spec import LTE_TARGETS
from flts.models import load_model
from flts.promotion import Promotion
from flts.services.context import ServiceContext

from .support import CONFIG_HASH, LiveServer, history_records, make_settings, offline_forecast


def test_serves_a_promoted_mlflow_run(tmp_path: Path, saved_models: dict[str, Path]) -> None:
    context = ServiceContext(make_settings(tmp_path))
    try:
        model = load_model(saved_models["run-ridge"])
        run_id = context.tracker.log_training_run(
            model, identifier="global", config_hash=CONFIG_HASH, correlation_id=str(uuid.uuid4())
        )
        with LiveServer(create_app(context, follow_bus=False)) as client:
            context.promotions.record(
                Promotion(run_id=run_id, model_type="RIDGE", config_hash=CONFIG_HASH)
            )
            records = history_records(12)
            deadline = time.monotonic() + 30.0  # first use imports MLflow and downloads
            while (
                response := client.post("/v1/forecast", json={"history": records})
            ).status_code == 503:
                assert time.monotonic() < deadline, "the promoted run was never served"
                time.sleep(0.02)
            assert response.status_code == 200, response.text
            assert response.headers["X-Model-Run-Id"] == run_id
            served = np.array([response.json()["forecast"][0][t] for t in LTE_TARGETS])
            expected = offline_forecast(saved_models["run-ridge"], records)[0]
            np.testing.assert_allclose(served, expected, rtol=1e-6)
    finally:
        context.close()
