"""Warm-up of a freshly loaded champion, before it takes traffic."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from flts.data.windows import Windows
from flts.exceptions import ModelError
from flts.models.base import Forecaster


def warm_up(model: Forecaster) -> None:
    """One prediction on a plausible window (the training minima, on the spec's grid) before
    the model takes traffic: it pays one-off costs (lazy imports, ONNX session set-up) and
    proves the model answers with finite numbers of the right shape."""
    spec = model.spec
    row = np.asarray(model.input_scaler.minimum, dtype=np.float64)
    step = np.timedelta64(spec.step.value, "ns")
    end = np.datetime64(datetime.now(UTC).replace(tzinfo=None, microsecond=0), "ns")
    times = end - step * np.arange(spec.lags, 0, -1)
    window = Windows(
        x=np.tile(row, (1, spec.lags, 1)),
        y=None,
        input_times=times[None, :],
        target_times=(times[-1] + step * np.arange(1, spec.horizon + 1))[None, :],
    )
    prediction = model.predict(window)
    if not np.isfinite(prediction).all():
        raise ModelError(f"{model.model_type} warm-up prediction is not finite")
