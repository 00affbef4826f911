"""LSTM/GRU champions are served from their ONNX graph: same forecasts as the torch module,
and a serving process that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flts.api.answers import row_answers
from flts.api.holder import LoadedModel
from flts.api.warmup import warm_up
from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import load_model
from flts.models.serving import OnnxForecaster, load_serving_model
from flts.promotion import Promotion

from .support import CONFIG_HASH, history_records, request_windows


@pytest.fixture(scope="session", params=["LSTM", "GRU"])
def neural_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny recurrent model trained for one epoch and saved (torch weights + ONNX)."""
    from flts.models import model_class

    spec = FeatureSpec()
    table = validate_frame(synthetic_traffic(600, seed=3).reset_index(drop=True), spec)
    prepared = prepare(table, spec=spec)
    cls = model_class(str(request.param))
    model = cls(spec, prepared.input_scaler, prepared.target_scaler, hidden_size=8, max_epochs=1)
    model.fit(prepared.train, prepared.validation)
    directory = tmp_path_factory.mktemp("neural") / str(request.param)
    model.save(directory)
    return directory


def test_onnx_and_torch_paths_forecast_the_same(neural_dir: Path) -> None:
    served = load_serving_model(neural_dir)
    reference = load_model(neural_dir)
    assert isinstance(served, OnnxForecaster)
    assert served.model_type == reference.model_type
    window = request_windows([{"history": history_records(40)}], served.spec)
    np.testing.assert_allclose(served.predict(window), reference.predict(window), rtol=1e-5)
    promotion = Promotion(run_id="r", model_type=served.model_type, config_hash=CONFIG_HASH)
    [onnx_answer] = row_answers(LoadedModel(served, promotion), window, [1])
    [torch_answer] = row_answers(LoadedModel(reference, promotion), window, [1])
    assert onnx_answer["forecast"][0]["time"] == torch_answer["forecast"][0]["time"]
    for target in served.spec.targets:
        assert onnx_answer["forecast"][0][target] == pytest.approx(
            torch_answer["forecast"][0][target], rel=1e-5
        )
    assert LoadedModel(served, promotion).inline
    assert not LoadedModel(reference, promotion).inline


def test_serving_process_never_imports_torch(neural_dir: Path, tmp_path: Path) -> None:
    """A fresh interpreter loads the model the way a replica does, warms it up and answers
    a request through the app's own code, then reports whether torch was imported."""
    request_path = tmp_path / "request.json"
    request_path.write_text(json.dumps({"history": history_records(12)}))
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        import flts.api, flts.api.routes, fastapi, uvicorn
        from flts.api.answers import row_answers
        from flts.api.forms import ForecastCall, decode, row_windows
        from flts.api.holder import LoadedModel
        from flts.api.warmup import warm_up
        from flts.models.serving import load_serving_model
        from flts.promotion import Promotion

        model = load_serving_model(Path({str(neural_dir)!r}))
        warm_up(model)
        loaded = LoadedModel(model, Promotion(run_id="r", model_type=model.model_type,
                                              config_hash={CONFIG_HASH!r}))
        call = decode(ForecastCall, Path({str(request_path)!r}).read_bytes())
        result = row_answers(loaded, row_windows([call], model.spec), [call.horizon])
        print(json.dumps({{"torch": "torch" in sys.modules,
                          "type": type(model).__name__,
                          "down": result[0]["forecast"][0]["down"]}}))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["type"].startswith("Onnx")
    assert report["torch"] is False
    assert report["down"] >= 0.0


def test_warm_up_runs_the_onnx_graph(neural_dir: Path) -> None:
    warm_up(load_serving_model(neural_dir))
