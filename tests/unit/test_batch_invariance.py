"""``Forecaster.batch_invariant``: the models that say so forecast each window bit for bit
the same alone or among others, which is what lets the inference API answer concurrent
requests with one model call (flts.api.microbatch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flts.data import FeatureSpec, PreparedData, Windows, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.models import Forecaster, model_class
from flts.models.serving import load_serving_model

#: Batch sizes compared with one-window calls: BLAS and ONNX Runtime pick kernels by size.
SIZES = (2, 7, 64, 300)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    spec = FeatureSpec()
    table = validate_frame(synthetic_traffic(1_400, seed=8).reset_index(drop=True), spec)
    return prepare(table, spec=spec)


def _alone_and_together(model: Forecaster, windows: Windows) -> tuple[np.ndarray, np.ndarray]:
    together = model.predict(windows)
    alone = np.concatenate(
        [model.predict(windows.take(slice(i, i + 1))) for i in range(len(windows))]
    )
    return alone, together


@pytest.mark.parametrize("model_type", ["RIDGE", "PERSISTENCE"])
def test_numpy_models_are_batch_invariant(data: PreparedData, model_type: str) -> None:
    cls = model_class(model_type)
    assert cls.batch_invariant
    model = cls(data.spec, data.input_scaler, data.target_scaler)
    model.fit(data.train, data.validation)
    for size in SIZES:
        alone, together = _alone_and_together(model, data.validation.take(slice(0, size)))
        assert np.array_equal(alone, together), size


@pytest.mark.parametrize("model_type", ["LSTM", "GRU", "MLP", "GLOBAL"])
def test_onnx_served_models_are_batch_invariant(
    data: PreparedData, model_type: str, tmp_path: Path
) -> None:
    cls = model_class(model_type)
    model = cls(
        data.spec, data.input_scaler, data.target_scaler, hidden_size=16, num_layers=2, max_epochs=1
    )
    model.fit(data.train, data.validation)
    model.save(tmp_path / model_type)
    served = load_serving_model(tmp_path / model_type)
    assert served.batch_invariant
    for size in SIZES:
        alone, together = _alone_and_together(served, data.validation.take(slice(0, size)))
        assert np.array_equal(alone, together), size


def test_seasonal_naive_is_not_batched() -> None:
    """It looks values up among every window of the call: another request's rows must never
    feed a forecast, so it is answered alone."""
    assert not model_class("SEASONAL_NAIVE").batch_invariant
