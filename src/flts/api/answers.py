"""Forecast answers: one model call for every window of a request, then the JSON records.

Values are in original units with negatives clipped to 0, exactly as the evaluator scores
them (traffic, users and resource blocks cannot be negative). Records are built for all
windows at once (one ``tolist`` and one vectorised timestamp conversion), not per window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from flts.api.holder import LoadedModel
from flts.data.windows import Windows
from flts.exceptions import ModelError


def iso_times(times: np.ndarray) -> list[str]:
    """``pd.Timestamp.isoformat`` of each time, vectorised for whole seconds (the usual case)."""
    ticks = times.astype("datetime64[ns]")
    if (ticks.view(np.int64) % 1_000_000_000 == 0).all():
        stamps: list[str] = np.datetime_as_string(ticks, unit="s").tolist()
        return stamps
    return [pd.Timestamp(t).isoformat() for t in ticks]


def predict_clipped(loaded: LoadedModel, windows: Windows) -> np.ndarray:
    """``(n, horizon, targets)`` forecasts, negatives clipped to 0; a model that produces NaN
    or infinity is a :class:`ModelError` (a 500)."""
    prediction = loaded.model.predict(windows)
    if not np.isfinite(prediction).all():
        raise ModelError(f"{loaded.promotion.model_type} produced non-finite forecasts")
    clipped: np.ndarray = np.clip(prediction, 0.0, None)
    return clipped


def row_answers(
    loaded: LoadedModel, windows: Windows, horizons: Sequence[int]
) -> list[dict[str, Any]]:
    """One ``{"forecast": [records], "model": {...}}`` per window (see ``ForecastResponse``),
    the first ``horizons[i]`` steps of window ``i``."""
    spec = loaded.spec
    width = windows.target_times.shape[1]
    targets = spec.targets
    steps = predict_clipped(loaded, windows).reshape(-1, len(targets)).tolist()
    stamps = iso_times(windows.target_times.reshape(-1))
    keys = (spec.time_column, *targets)
    records = [
        dict(zip(keys, (stamp, *step), strict=True))
        for stamp, step in zip(stamps, steps, strict=True)
    ]
    info = loaded.info
    return [
        {"forecast": records[index * width : index * width + horizon], "model": info}
        for index, horizon in enumerate(horizons)
    ]


def tensor_answer(loaded: LoadedModel, windows: Windows, horizon: int) -> dict[str, Any]:
    """The tensor answer of one model call for every window (see ``WindowBatchResponse``)."""
    forecast = predict_clipped(loaded, windows)[:, :horizon]
    stamps = iso_times(windows.target_times[:, :horizon].reshape(-1))
    return {
        "model": loaded.info,
        "targets": list(loaded.spec.targets),
        "times": [stamps[start : start + horizon] for start in range(0, len(stamps), horizon)],
        "forecast": forecast.tolist(),
    }
