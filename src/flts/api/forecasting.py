"""The forecast path: JSON history rows -> validated window -> champion forecast.

Requests pass the *same* checks as uploaded CSV files (:func:`flts.data.reader.validate_frame`
with the model's saved feature spec), with two differences that are deliberate:

* **Missing values are rejected.** The recipe's ``fill_na`` (NaN -> 0) is a training-data
  convention for holes in historical files; silently zero-filling a live request would turn a
  broken sensor feed into a confident forecast of near-zero traffic. A caller must send every
  value (JSON ``null`` counts as missing).
* **Only ``lags`` rows are needed** (the window), not ``lags + horizon`` (a training example).

``horizon`` may be 1 up to the spec's horizon: a model predicts exactly the steps it was
trained and scored for, and a request gets the first ``horizon`` of them. Longer horizons
would need recursive forecasting on the model's own outputs, which no candidate was evaluated
on, so they are refused (422) rather than silently extrapolated. The whole history is
validated (up to ``serving.max_history_rows``), not only its last window.

The model's own saved scalers and spec are used, so a request is transformed exactly as the
model's training data was. No I/O happens here: everything was loaded once at swap time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from flts.api.errors import ApiError
from flts.api.holder import LoadedModel
from flts.api.schemas import ForecastRequest
from flts.data.reader import quote, validate_frame
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows, last_window
from flts.exceptions import DataValidationError, ModelError


def _history_label(positions: np.ndarray) -> str:
    return quote(positions, lambda p: f"history[{int(p)}]")


def _column(history: Sequence[dict[str, Any]], name: str) -> pd.Series:
    series = pd.Series([row.get(name) for row in history], dtype=None if history else object)
    if series.dtype == bool or series.dtype == object:
        # JSON true/false, arrays and objects are not numbers; as text they are reported as
        # "not numeric" by the shared checks instead of being read as 1/0 or crashing them.
        series = series.map(lambda v: str(v) if isinstance(v, bool | list | dict) else v)
    return series


def history_frame(history: Sequence[dict[str, Any]], spec: FeatureSpec) -> pd.DataFrame:
    """The request rows as a raw table of the columns the spec needs; a column no row has is
    left out so the shared checks report it as missing."""
    needed = (spec.time_column, *spec.inputs)
    present = [c for c in needed if any(c in row for row in history)]
    return pd.DataFrame({c: _column(history, c) for c in present}, index=range(len(history)))


def horizon_problems(horizon: int, spec: FeatureSpec) -> list[str]:
    """A horizon the model was not trained for, as a problem line (none when it was)."""
    if horizon <= spec.horizon:
        return []
    return [
        f"horizon {horizon} is out of range: this model forecasts 1 to {spec.horizon} steps "
        "(the horizon it was trained and evaluated for)"
    ]


def request_window(request: ForecastRequest, spec: FeatureSpec) -> Windows:
    """Validate ``request`` against ``spec`` and return its inference window; raise
    :class:`DataValidationError` listing every problem."""
    problems: list[str] = []
    rows = len(request.history)
    if rows < spec.lags:
        problems.append(
            f"too few rows: {rows} (the model needs at least the last {spec.lags} rows: lags)"
        )
    problems += horizon_problems(request.horizon, spec)
    if rows == 0:
        raise DataValidationError(*problems)
    raw = history_frame(request.history, spec)
    for column in spec.inputs:
        if column not in raw:
            continue  # reported by the shared checks as a missing column
        missing = np.flatnonzero(raw[column].isna().to_numpy())
        if len(missing):
            problems.append(
                f"column {column!r} has missing values (null) at {_history_label(missing)}; "
                "forecast requests must carry every value (missing-value filling applies to "
                "training files only)"
            )
    try:
        table = validate_frame(raw, spec, min_rows=0, row_label=_history_label)
    except DataValidationError as exc:
        raise DataValidationError(*problems, *exc.problems) from exc
    if problems:
        raise DataValidationError(*problems)
    values = table.frame.to_numpy(np.float64)
    return last_window(values, table.times.as_unit("ns").to_numpy(), spec)


def model_info(loaded: LoadedModel) -> dict[str, Any]:
    return loaded.info


def iso_times(times: np.ndarray) -> list[str]:
    """``pd.Timestamp.isoformat`` of each time, vectorised for whole seconds (the usual case)."""
    ticks = times.astype("datetime64[ns]")
    if (ticks.view(np.int64) % 1_000_000_000 == 0).all():
        stamps: list[str] = np.datetime_as_string(ticks, unit="s").tolist()
        return stamps
    return [pd.Timestamp(t).isoformat() for t in ticks]


def predict_clipped(loaded: LoadedModel, windows: Windows) -> np.ndarray:
    """``(n, horizon, targets)`` forecasts in original units with negatives clipped to 0,
    exactly as the evaluator scores them (traffic, users and resource blocks cannot be
    negative); a model that produces NaN or infinity is a :class:`ModelError` (a 500)."""
    prediction = loaded.model.predict(windows)
    if not np.isfinite(prediction).all():
        raise ModelError(f"{loaded.promotion.model_type} produced non-finite forecasts")
    clipped: np.ndarray = np.clip(prediction, 0.0, None)
    return clipped


def answer(loaded: LoadedModel, windows: Windows, horizons: Sequence[int]) -> list[dict[str, Any]]:
    """One answer per window from one ``predict`` call (batched: one ONNX run for all).

    Values come from :func:`predict_clipped`. Records are built for all windows at once
    (one ``tolist`` and one ``dict(zip(...))`` per step), then sliced.
    """
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


def forecast(loaded: LoadedModel, request: ForecastRequest, *, prefix: str = "") -> dict[str, Any]:
    """Answer one validated request with ``loaded`` (the reference the caller took at its
    start) through the reference validation path."""
    try:
        window = request_window(request, loaded.spec)
    except DataValidationError as exc:
        raise ApiError.from_validation(exc, prefix) from exc
    return answer(loaded, window, [request.horizon])[0]
