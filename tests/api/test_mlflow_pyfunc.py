"""The MLflow Model of a trained run: trained and promoted through the services, loaded with
``mlflow.pyfunc.load_model`` from the registry, and its ``predict`` compared with what the
inference API serves for the same window."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import helpers
from flts.api import create_app
from flts.data import FeatureSpec, split
from flts.data.processed import write_processed
from flts.data.spec import LTE_TARGETS
from flts.events import MODEL_TRAINING, Event, TrainingDataEvent
from flts.models.mlflow_pyfunc import STEP_COLUMN, WINDOW_COLUMN, flavors
from flts.promotion import promote_run
from flts.services.context import ServiceContext
from flts.services.evaluate import EvaluateService
from flts.services.train import TrainService
from flts.settings import EvaluationSettings
from flts.tracking import MODEL_ARTIFACT

from .support import LiveServer, history_records, make_settings

HASH = "5a5a5a5a" * 2
#: A neural model small enough to train in a second or two.
TINY_LSTM = {"hidden_size": 8, "max_epochs": 2, "batch_size": 64}


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServiceContext]:
    settings = make_settings(tmp_path)
    # mlflow.pyfunc.load_model resolves models:/ and runs:/ URIs with the default URIs.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking.uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", settings.tracking.uri)
    opened = ServiceContext(settings)
    yield opened
    opened.close()


def horizon_data(context: ServiceContext, horizon: int) -> TrainingDataEvent:
    """Processed data of a ``horizon``-step task, as preprocessing leaves it."""
    spec = FeatureSpec(horizon=horizon)
    train_table, test_table = helpers.synthetic_tables(800, 600, seed=7, spec=spec)
    keys = write_processed(
        context.store,
        split(train_table, test_table, spec=spec),
        config_hash=HASH,
        canonical_json="{}",
        input_digests={},
    )
    return helpers.training_event(keys)


def train_and_promote(
    context: ServiceContext,
    model_type: str,
    params: dict[str, Any],
    data: TrainingDataEvent | None = None,
) -> str:
    """Train through the trainer service, judge through the evaluator and, when the gate
    keeps the model out (a two-epoch LSTM may not beat persistence), promote it by hand as
    ``flts promote`` does; return the run id."""
    context.settings = context.settings.model_copy(
        update={"evaluation": EvaluationSettings(expected_models=(model_type,))}
    )
    if data is None:
        data = helpers.training_event(helpers.write_data(context.store, HASH, seed=7))
    TrainService(context, model_type, params=params).handle(data)
    [run] = list(context.tracker.runs_for(config_hash=HASH, identifier="global"))
    assert run.finished, run.error
    reports: list[Event] = []
    context.bus.consume(MODEL_TRAINING, "test-reader", reports.append, max_idle=0.05)
    EvaluateService(context).handle(reports[-1])
    current = context.promotions.current("global")
    if current is None or current.run_id != run.run_id:
        promote_run(context, run.run_id, actor="test")
    return run.run_id


def api_forecast(
    context: ServiceContext, records: list[dict[str, Any]], run_id: str, **request: Any
) -> Any:
    body = {"history": records, **request}
    with LiveServer(create_app(context, follow_bus=False)) as client:
        deadline = time.monotonic() + 60.0  # first use downloads and warms the model
        while (response := client.post("/v1/forecast", json=body)).status_code == 503:
            assert time.monotonic() < deadline, "the promoted run was never served"
            time.sleep(0.05)
        assert response.status_code == 200, response.text
        assert response.headers["X-Model-Run-Id"] == run_id
        return response.json()


def window_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The request's rows as the pyfunc model takes them: a DataFrame with real times (the
    extra ``station_note`` column stays in: it is ignored, as by the API)."""
    frame = pd.DataFrame(records)
    frame["time"] = pd.to_datetime(frame["time"])
    return frame


@pytest.mark.parametrize(("model_type", "params"), [("RIDGE", {}), ("LSTM", TINY_LSTM)])
def test_registry_champion_loads_with_pyfunc_and_predicts_the_apis_numbers(
    context: ServiceContext, model_type: str, params: dict[str, Any]
) -> None:
    import mlflow.pyfunc

    run_id = train_and_promote(context, model_type, params)
    name = context.tracker.registered_model_name("global")
    champion = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    by_run = mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")

    records = history_records(12)
    answer = api_forecast(context, records, run_id)
    served = np.array([[step[t] for t in LTE_TARGETS] for step in answer["forecast"]])
    for loaded in (champion, by_run):
        predicted = loaded.predict(window_frame(records))
        assert list(predicted[STEP_COLUMN]) == list(range(1, len(served) + 1))
        np.testing.assert_allclose(predicted[list(LTE_TARGETS)].to_numpy(), served, rtol=1e-6)
        assert [t.isoformat() for t in predicted["time"]] == [s["time"] for s in answer["forecast"]]

    # Signature, input example and flavours are on the MLflow Model.
    signature = champion.metadata.signature
    assert signature is not None
    assert signature.inputs.input_names()[:2] == ["time", "down"]
    example = champion.input_example
    assert isinstance(example, pd.DataFrame)
    assert len(champion.predict(example)) == 1
    local = Path(context.tracker.model_dir(run_id))
    expected = {"python_function", "onnx"} if model_type == "LSTM" else {"python_function"}
    assert set(flavors(local)) == expected
    if model_type == "LSTM":  # the graph loads with MLflow's own ONNX flavour
        import mlflow.onnx

        graph = mlflow.onnx.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")
        assert [node.name for node in graph.graph.input] == ["inputs"]


def test_every_horizon_step_and_interval_matches_the_api(context: ServiceContext) -> None:
    import mlflow.pyfunc

    run_id = train_and_promote(context, "RIDGE", {}, horizon_data(context, 5))
    records = history_records(12)
    answer = api_forecast(context, records, run_id, horizon=5, intervals=[80])
    name = context.tracker.registered_model_name("global")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    predicted = loaded.predict(window_frame(records), params={"intervals": [80.0]})
    assert list(predicted[STEP_COLUMN]) == [1, 2, 3, 4, 5]
    served = np.array([[step[t] for t in LTE_TARGETS] for step in answer["forecast"]])
    np.testing.assert_allclose(predicted[list(LTE_TARGETS)].to_numpy(), served, rtol=1e-6)
    band = answer["intervals"]["80"]
    for target in LTE_TARGETS:
        lower = [step[target][0] for step in band]
        upper = [step[target][1] for step in band]
        np.testing.assert_allclose(predicted[f"{target}_lower_80"], lower, rtol=1e-6)
        np.testing.assert_allclose(predicted[f"{target}_upper_80"], upper, rtol=1e-6)


def test_several_windows_answer_in_order_with_intervals(context: ServiceContext) -> None:
    import mlflow.pyfunc

    run_id = train_and_promote(context, "RIDGE", {})
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")
    first, second = window_frame(history_records(12)), window_frame(history_records(12, offset=30))
    both = pd.concat([second.assign(window_id="b"), first.assign(window_id="a")])
    answer = loaded.predict(both, params={"intervals": [50.0]})
    assert list(answer[WINDOW_COLUMN]) == ["b", "a"]
    alone = loaded.predict(first, params={"intervals": [50.0]})
    np.testing.assert_allclose(
        answer.loc[answer[WINDOW_COLUMN] == "a", list(LTE_TARGETS)].to_numpy(),
        alone[list(LTE_TARGETS)].to_numpy(),
    )
    for target in LTE_TARGETS:
        assert (answer[f"{target}_lower_50"] <= answer[f"{target}_upper_50"]).all()


def test_a_short_or_off_grid_window_is_refused_with_its_reasons(context: ServiceContext) -> None:
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException

    from flts.exceptions import DataValidationError

    run_id = train_and_promote(context, "RIDGE", {})
    loaded = mlflow.pyfunc.load_model(f"runs:/{run_id}/{MODEL_ARTIFACT}")
    frame = window_frame(history_records(12))
    with pytest.raises(DataValidationError, match="a window needs at least 10"):
        loaded.predict(frame.iloc[:4])
    gap = frame.drop(index=5)
    with pytest.raises(DataValidationError, match="not consecutive steps of 2min"):
        loaded.predict(gap)
    with pytest.raises(MlflowException, match="down"):
        loaded.predict(frame.drop(columns=["down"]))


#: Loads the champion in a fresh interpreter and says whether torch got imported on the way.
_TORCH_FREE = """
import sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
model.predict(model.input_example)
print("torch" in sys.modules)
"""


def test_a_neural_champion_loads_and_predicts_without_torch(context: ServiceContext) -> None:
    """The pyfunc loader serves the ONNX graph, as a replica does: a process that loads and
    predicts the champion never imports torch (the serving image leaves it out)."""
    train_and_promote(context, "LSTM", TINY_LSTM)
    name = context.tracker.registered_model_name("global")
    done = subprocess.run(
        [sys.executable, "-c", _TORCH_FREE, f"models:/{name}@champion"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
