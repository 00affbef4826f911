"""Serve a saved FLTS model with MLflow's own model server, for the serving benchmark's
comparison.

:func:`log_pyfunc_model` logs an ``mlflow.pyfunc`` model *from code*
(:mod:`benchmarks.mlflow_model_code`): MLflow stores that source file plus the saved FLTS model
directory as an artifact (JSON scalers and spec, ``model.onnx``), so nothing of ours is
pickled. ``mlflow models serve -m runs:/<run>/pyfunc --env-manager local`` then answers
``POST /invocations`` with ``{"dataframe_records": [history rows]}``: the same rows a client
sends FLTS, validated by the data contract (:func:`flts.data.validate_frame`, the checks
uploads get) and predicted by the same ONNX runtime.
The model server imports this module, so it runs with the checkout on its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

#: Artifact key of the saved FLTS model directory inside the pyfunc model.
ARTIFACT_KEY = "flts_model"
#: Name of the pyfunc model inside its run.
PYFUNC_NAME = "pyfunc"


def _python_model_base() -> type[Any]:
    import mlflow.pyfunc

    base: type[Any] = mlflow.pyfunc.PythonModel
    return base


class FltsPyfuncModel(_python_model_base()):  # type: ignore[misc]
    """An FLTS forecaster behind ``mlflow.pyfunc``: one history per call, forecast records
    out (original units, negatives clipped to 0, as ``POST /v1/forecast`` answers)."""

    def load_context(self, context: Any) -> None:
        from flts.models.serving import load_serving_model

        self.model = load_serving_model(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        import numpy as np

        from flts.data import last_window, validate_frame

        spec = self.model.spec
        table = validate_frame(model_input, spec, min_rows=spec.lags)
        values = table.frame.to_numpy(np.float64)
        window = last_window(values, table.times.as_unit("ns").to_numpy(), spec)
        prediction = np.clip(self.model.predict(window)[0], 0.0, None)
        frame = pd.DataFrame(prediction, columns=list(spec.targets))
        stamps = [pd.Timestamp(t).isoformat() for t in window.target_times[0]]
        frame.insert(0, spec.time_column, stamps)
        return frame


def log_pyfunc_model(
    model_dir: Path, *, tracking_uri: str, artifacts: Path, experiment: str = "flts-bench"
) -> str:
    """Log ``model_dir`` (a saved FLTS model) as a pyfunc model in a new run; returns the
    ``runs:/`` URI to pass to ``mlflow models serve -m``."""
    import importlib.util

    import mlflow

    spec = importlib.util.find_spec("benchmarks.mlflow_model_code")
    assert spec is not None
    assert spec.origin is not None
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        # Not MLflow's default ./mlruns in the working directory.
        client.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(
            name=PYFUNC_NAME,
            python_model=spec.origin,
            artifacts={ARTIFACT_KEY: str(model_dir)},
            # Served with --env-manager local: no environment to infer or build.
            pip_requirements=["flts"],
        )
    return f"runs:/{run.info.run_id}/{PYFUNC_NAME}"
