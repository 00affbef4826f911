"""Forecast answers: one model call for every window of a request, then the JSON records.

Values are in original units with negatives clipped to 0, exactly as the evaluator scores
them (traffic, users and resource blocks cannot be negative). Records are built for all
windows at once (one ``tolist`` and one vectorised timestamp conversion), not per window.
Prediction intervals come from the model's own calibration (validation residuals, saved with
it); a model saved without one answers a request for intervals with a 422, never a made-up band.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from flts.api.holder import LoadedModel
from flts.data.windows import Windows
from flts.exceptions import ModelError
from flts.models.intervals import level_key

#: Up to this many times, Python's ``datetime.isoformat`` beats numpy's per-call overhead
#: (measured with numpy 2.4: even at 4 times numpy is twice as fast; a micro-batch of 16
#: single forecasts converts its 16 times in a quarter of the time Python takes).
_FEW_TIMES = 1
_EPOCH = datetime(1970, 1, 1)


def iso_times(times: np.ndarray) -> list[str]:
    """``pd.Timestamp.isoformat`` of each time: whole seconds (the usual case) without
    pandas, vectorised when there are many."""
    ticks = times.astype("datetime64[ns]", copy=False).view(np.int64)
    if len(ticks) <= _FEW_TIMES:
        values: list[int] = ticks.tolist()
        if all(value % 1_000_000_000 == 0 for value in values):
            return [(_EPOCH + timedelta(microseconds=v // 1000)).isoformat() for v in values]
    elif (ticks % 1_000_000_000 == 0).all():
        stamps: list[str] = np.datetime_as_string(ticks.view("datetime64[ns]"), unit="s").tolist()
        return stamps
    return [pd.Timestamp(t).isoformat() for t in ticks.view("datetime64[ns]")]


def predict_clipped(loaded: LoadedModel, windows: Windows) -> np.ndarray:
    """``(n, horizon, targets)`` forecasts, negatives clipped to 0; a model that produces NaN
    or infinity is a :class:`ModelError` (a 500)."""
    prediction = loaded.model.predict(windows)
    if not np.isfinite(prediction).all():
        raise ModelError(f"{loaded.promotion.model_type} produced non-finite forecasts")
    clipped: np.ndarray = np.clip(prediction, 0.0, None)
    return clipped


def tensor_answers(
    loaded: LoadedModel, items: Sequence[tuple[Windows, int, tuple[float, ...]]]
) -> list[dict[str, Any]]:
    """The tensor answers of several requests (windows, horizon, levels) by one model call."""
    if len(items) == 1:
        [(windows, horizon, levels)] = items
        return [tensor_answer(loaded, windows, horizon, levels)]
    together = Windows(
        x=np.concatenate([w.x for w, _, _ in items]),
        y=None,
        input_times=np.concatenate([w.input_times for w, _, _ in items]),
        target_times=np.concatenate([w.target_times for w, _, _ in items]),
    )
    full = predict_clipped(loaded, together)
    answers, start = [], 0
    for windows, horizon, levels in items:
        own = full[start : start + len(windows)]
        answers.append(tensor_answer(loaded, windows, horizon, levels, full=own))
        start += len(windows)
    return answers


def row_answers(
    loaded: LoadedModel,
    windows: Windows,
    horizons: Sequence[int],
    levels: Sequence[tuple[float, ...]] | None = None,
) -> list[dict[str, Any]]:
    """One ``{"forecast": [records], "model": {...}}`` per window (see ``ForecastResponse``),
    the first ``horizons[i]`` steps of window ``i``, with ``intervals`` at ``levels[i]`` when
    that window asks for any."""
    spec = loaded.spec
    width = windows.target_times.shape[1]
    targets = spec.targets
    forecast = predict_clipped(loaded, windows)
    steps = forecast.reshape(-1, len(targets)).tolist()
    stamps = iso_times(windows.target_times.reshape(-1))
    keys = (spec.time_column, *targets)
    records = [
        dict(zip(keys, (stamp, *step), strict=True))
        for stamp, step in zip(stamps, steps, strict=True)
    ]
    info = loaded.info
    answers: list[dict[str, Any]] = [
        {"forecast": records[index * width : index * width + horizon], "model": info}
        for index, horizon in enumerate(horizons)
    ]
    wanted = sorted({level for own in levels or () for level in own})
    if wanted:
        bands = _band_records(loaded, windows, forecast, tuple(wanted), stamps)
        for index, (answer, own) in enumerate(zip(answers, levels or (), strict=True)):
            if not own:
                continue
            start = index * width
            answer["intervals"] = {
                level_key(level): bands[level][start : start + horizons[index]] for level in own
            }
    return answers


def _band_records(
    loaded: LoadedModel,
    windows: Windows,
    forecast: np.ndarray,
    levels: tuple[float, ...],
    stamps: list[str],
) -> dict[float, list[dict[str, Any]]]:
    """Per level, one ``{"time", target: [lower, upper], ...}`` record per window step."""
    targets = loaded.spec.targets
    records: dict[float, list[dict[str, Any]]] = {}
    for level, (lower, upper) in loaded.model.intervals(windows, forecast, levels).items():
        pairs = np.stack([lower, upper], axis=-1).reshape(-1, len(targets), 2).tolist()
        records[level] = [
            {loaded.spec.time_column: stamp, **dict(zip(targets, step, strict=True))}
            for stamp, step in zip(stamps, pairs, strict=True)
        ]
    return records


def tensor_answer(
    loaded: LoadedModel,
    windows: Windows,
    horizon: int,
    levels: tuple[float, ...] = (),
    full: np.ndarray | None = None,
) -> dict[str, Any]:
    """The tensor answer of one model call for every window (see ``WindowBatchResponse``),
    with lower and upper arrays per interval level when ``levels`` asks for any; ``full``:
    the forecasts of ``windows`` when already predicted (with others, micro-batched)."""
    if full is None:
        full = predict_clipped(loaded, windows)
    stamps = iso_times(windows.target_times[:, :horizon].reshape(-1))
    answer: dict[str, Any] = {
        "model": loaded.info,
        "targets": list(loaded.spec.targets),
        "times": [stamps[start : start + horizon] for start in range(0, len(stamps), horizon)],
        "forecast": full[:, :horizon].tolist(),
    }
    if levels:
        answer["intervals"] = {
            level_key(level): {
                "lower": lower[:, :horizon].tolist(),
                "upper": upper[:, :horizon].tolist(),
            }
            for level, (lower, upper) in loaded.model.intervals(windows, full, levels).items()
        }
    return answer
