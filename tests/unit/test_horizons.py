"""Every model type at a horizon beyond one step: training, save/load, ONNX parity for the
networks, and calibrated intervals (shapes, ordering, non-negativity)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("prophet")

from test_neural import TINY, build_prepared

from flts.data import FeatureSpec, PreparedData
from flts.models import MODEL_TYPES, load_model, model_class
from flts.models.neural import TorchForecaster
from flts.models.onnx_runtime import onnx_predict

HORIZON = 6
#: Cheap settings per type, so the whole file stays in seconds.
PARAMS: dict[str, dict[str, Any]] = {
    "LSTM": TINY,
    "GRU": TINY,
    "GLOBAL": TINY,
    "MLP": {**{k: v for k, v in TINY.items() if k != "hidden_size"}, "width": 16},
    "ENSEMBLE": {"members": ["RIDGE", "MLP"], "member_params": {"MLP": {"max_epochs": 3}}},
    "PROPHET": {"candidates": [{"growth": "flat", "seasonality_mode": "additive"}]},
    "SEASONAL_NAIVE": {"season": "1h"},
}


@pytest.fixture(scope="module")
def prepared() -> PreparedData:
    return build_prepared(FeatureSpec(horizon=HORIZON))


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_model_type_forecasts_and_bounds_many_steps(
    prepared: PreparedData, model_type: str, tmp_path: Path
) -> None:
    test = prepared.test
    assert test is not None
    cls = model_class(model_type)
    params = {k: v for k, v in PARAMS.get(model_type, {}).items() if k in cls.default_params}
    model = cls(prepared.spec, prepared.input_scaler, prepared.target_scaler, **params)
    model.fit(prepared.train, prepared.validation)
    forecast = model.predict(test)
    assert forecast.shape == (len(test), HORIZON, len(prepared.spec.targets))
    assert np.isfinite(forecast).all()

    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(test), forecast, rtol=1e-5, atol=1e-6)
    if isinstance(model, TorchForecaster):
        encoded = model.encode(test)
        np.testing.assert_allclose(
            onnx_predict(tmp_path / "m" / "model.onnx", encoded),
            model.predict_scaled(encoded),
            atol=1e-5,
        )

    bands = loaded.intervals(test, forecast, (80.0, 95.0))
    inner, outer = bands[80.0], bands[95.0]
    served = np.maximum(forecast, 0.0)  # forecasts are served and scored clipped at 0
    for lower, upper in (inner, outer):
        assert lower.shape == upper.shape == forecast.shape
        assert (lower >= 0).all()
        assert (lower <= served).all()
        assert (upper >= served).all()
    assert (outer[0] <= inner[0]).all()
    assert (outer[1] >= inner[1]).all()
    assert loaded.calibration is not None
    assert loaded.calibration.samples == len(prepared.validation)
