"""The compact batch form: many windows of one identifier as one tensor.

``POST /v1/forecast/batch`` takes either ``{"requests": [...]}`` (row form: one forecast
request per item, every row a JSON object) or a :class:`~flts.api.schemas.WindowBatchRequest`
(``columns``, ``end_times`` and the values as ``windows[i][row][column]`` or as
``encoded_windows``, base64 bytes). A 256-window batch in the row form is ~830 KB of JSON
dominated by repeated keys and per-row timestamps; as nested numbers it is about half that
and becomes one numpy array in one call instead of 2,560 dictionaries; as bytes no number is
parsed from text at all (parsing 28,000 17-digit decimals costs more than the LSTM).

What is checked is what the row form checks, restated for a tensor: every input column named
(each name at most once), ``lags`` to ``max_history_rows`` rows per window (more is a 413),
one number per column in every row (JSON numbers only: strings, booleans and ``null`` are
refused, reported at the first bad position; decoded bytes must match the shape), finite
values, a parsable time per window and a horizon the model was trained for. Rows are
consecutive steps of the model's grid by definition of the form, so there are no per-row
timestamps to order; ``end_times`` follows the time column's rules
(:func:`flts.data.reader.parse_times`: ISO 8601, offsets converted to UTC).

:func:`flts.api.fastpath.fast_window_batch` accepts ordinary bodies in microseconds; this
module is the reference (every problem, precisely) and builds the windows for both.
"""

from __future__ import annotations

import binascii
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from flts.api.forecasting import horizon_problems, iso_times, predict_clipped
from flts.api.holder import LoadedModel
from flts.api.schemas import EncodedWindows, WindowBatchRequest
from flts.data.reader import parse_times, quote
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows
from flts.exceptions import DataValidationError

#: numpy dtypes of ``encoded_windows.dtype`` (little-endian whatever the server's byte order).
ENCODED_DTYPES = {"float32": "<f4", "float64": "<f8"}


#: Keys only the tensor form has: a body with any of them is validated as the tensor form.
_TENSOR_KEYS = ("windows", "encoded_windows", "columns", "end_times")


def _at(name: str, positions: Sequence[Any] | np.ndarray) -> str:
    """``name[i]`` for the first few positions (:func:`~flts.data.reader.quote`)."""
    return quote(positions, f"{name}[{{}}]".format)


def is_window_batch(document: Any) -> bool:
    """Whether a batch body is in the tensor form (else it is the row form)."""
    return type(document) is dict and any(key in document for key in _TENSOR_KEYS)


def claimed_size(document: dict[str, Any]) -> tuple[int, int]:
    """How many windows a tensor body claims and the most rows one of them has (for the 413
    limits, checked before anything else)."""
    windows, encoded = document.get("windows"), document.get("encoded_windows")
    if isinstance(windows, list):
        rows = max((len(w) for w in windows if isinstance(w, list)), default=0)
        return len(windows), rows
    shape = encoded.get("shape") if isinstance(encoded, dict) else None
    if isinstance(shape, list) and len(shape) > 1 and all(type(n) is int for n in shape[:2]):
        return shape[0], shape[1]
    return 0, 0


def column_order(columns: list[str], spec: FeatureSpec) -> np.ndarray | None:
    """Positions of the spec's inputs in ``columns``; ``None`` when ``columns`` *is* the
    inputs in order (no reordering copy). ``ValueError`` when an input is not named."""
    if tuple(columns) == spec.inputs:
        return None
    return np.array([columns.index(name) for name in spec.inputs])


def build_windows(
    values: np.ndarray, ends: np.ndarray, order: np.ndarray | None, spec: FeatureSpec
) -> Windows:
    """Windows from ``values`` ``(n, rows >= lags, columns)`` and each window's last time
    ``ends`` ``(n,)`` (``datetime64[ns]``): the last ``lags`` rows, inputs in spec order."""
    lags = spec.lags
    x = values[:, -lags:] if order is None else values[:, -lags:, order]
    step = np.timedelta64(int(spec.step.value), "ns")
    ends = ends[:, None]
    return Windows(
        x=np.ascontiguousarray(x, dtype=np.float64),
        y=None,
        input_times=ends - step * np.arange(lags - 1, -1, -1),
        target_times=ends + step * np.arange(1, spec.horizon + 1),
    )


def validate_window_batch(request: WindowBatchRequest, spec: FeatureSpec) -> Windows:
    """The windows of a type-checked ``request``; raise :class:`DataValidationError` listing
    every problem (positions quoted as ``windows[i]``, ``windows[i][row]``, ``end_times[i]``)."""
    problems = horizon_problems(request.horizon, spec)
    columns = request.columns
    duplicated = sorted(name for name, count in Counter(columns).items() if count > 1)
    if duplicated:
        problems.append(f"columns names {quote(duplicated, repr)} more than once")
    missing = [c for c in spec.inputs if c not in columns]
    if missing:
        problems.append(
            f"columns lacks the model's input(s) {quote(missing, repr)} "
            f"(the model needs {list(spec.inputs)})"
        )
    if request.windows is not None and request.encoded_windows is None:
        values = _listed(request.windows, len(columns), spec.lags, problems)
    elif request.encoded_windows is not None and request.windows is None:
        values = _decoded(request.encoded_windows, len(columns), spec.lags, problems)
    else:
        values = None
        problems.append("give the windows as exactly one of windows and encoded_windows")
    if values is not None and len(request.end_times) != len(values):
        problems.append(
            f"end_times has {len(request.end_times)} entries for {len(values)} windows: "
            "one per window (the time of its last row)"
        )
    ends = _parse_end_times(request.end_times, problems)
    if problems:
        raise DataValidationError(*problems)
    # Every path that leaves these None added a problem, raised above.
    assert values is not None
    assert ends is not None
    infinite = np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))
    if len(infinite):
        raise DataValidationError(f"non-finite values at {_at('windows', infinite)}")
    return build_windows(values, ends, column_order(columns, spec), spec)


def _listed(
    windows: list[list[list[float]]], width: int, lags: int, problems: list[str]
) -> np.ndarray | None:
    """``(n, lags, width)`` values from JSON numbers (windows may differ in length)."""
    found = len(problems)
    short = [i for i, window in enumerate(windows) if len(window) < lags]
    if short:
        problems.append(
            f"too few rows at {_at('windows', short)} (the model needs at least the last "
            f"{lags} rows of each window: lags)"
        )
    ragged = [
        f"{i}][{r}"
        for i, window in enumerate(windows)
        for r, row in enumerate(window)
        if len(row) != width
    ]
    if ragged:
        problems.append(
            f"wrong number of values at {_at('windows', ragged)}: every row has one per "
            f"entry of columns ({width})"
        )
    if len(problems) > found:
        return None
    return np.array([window[-lags:] for window in windows], dtype=np.float64)


def _decoded(
    encoded: EncodedWindows, width: int, lags: int, problems: list[str]
) -> np.ndarray | None:
    """``(n, rows, width)`` values from base64 bytes."""
    found = len(problems)
    count, rows, columns = encoded.shape
    if count < 1 or rows < lags or columns != width:
        problems.append(
            f"encoded_windows.shape is {encoded.shape}: it needs at least 1 window, at least "
            f"{lags} rows per window (lags) and {width} values per row (one per entry of "
            "columns)"
        )
    try:
        data = binascii.a2b_base64(encoded.base64, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or characters outside ASCII
        problems.append(f"encoded_windows.base64 is not valid base64: {exc}")
        return None
    dtype = np.dtype(ENCODED_DTYPES[encoded.dtype])
    expected = count * rows * columns * dtype.itemsize
    if len(problems) == found and len(data) != expected:
        problems.append(
            f"encoded_windows.base64 holds {len(data)} bytes; shape {encoded.shape} of "
            f"{encoded.dtype} needs {expected}"
        )
    if len(problems) > found:
        return None
    return np.frombuffer(data, dtype=dtype).reshape(count, rows, columns)


def _parse_end_times(end_times: list[str], problems: list[str]) -> np.ndarray | None:
    """``end_times`` as naive UTC ``datetime64[ns]`` (the time column's rules)."""

    def label(positions: np.ndarray) -> str:
        return _at("end_times", positions)

    parsed = parse_times(pd.Series(end_times, dtype=object), problems, label)
    return None if parsed is None else parsed.to_numpy(dtype="datetime64[ns]")


def answer_window_batch(loaded: LoadedModel, windows: Windows, horizon: int) -> dict[str, Any]:
    """The tensor answer of one model call for every window (see ``WindowBatchResponse``)."""
    forecast = predict_clipped(loaded, windows)[:, :horizon]
    stamps = iso_times(windows.target_times[:, :horizon].reshape(-1))
    return {
        "model": loaded.info,
        "targets": list(loaded.spec.targets),
        "times": [stamps[start : start + horizon] for start in range(0, len(stamps), horizon)],
        "forecast": forecast.tolist(),
    }
