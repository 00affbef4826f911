"""The fast path of forecast requests: orjson documents straight to numpy windows.

The reference path (:func:`flts.api.forecasting.request_window`: pydantic, then pandas
``validate_frame``) costs milliseconds; a 10x11 window takes ~20 us in ONNX Runtime, so that
path, not the model, would bound throughput. This module *accepts* well-formed requests in
microseconds with C-level operations only (``operator.itemgetter``, one regex over all
timestamps, one ``numpy`` conversion) and *never rejects*: whenever anything is unusual it
returns ``None`` and the caller runs the reference path, which produces the precise 422
messages. Messages are therefore identical by construction; the contract this module must
keep is one-sided and tested case by case:

    fast path accepts  =>  the reference path accepts and builds the same windows.

What it accepts: a JSON object with only ``history``, ``horizon`` (a JSON integer from 1 to
the spec's horizon) and ``identifier`` (one the caller already resolved); ``history`` a list
of at least ``lags`` objects, each with the time column as a naive ISO 8601 string
(``YYYY-MM-DD[T ]HH:MM:SS[.fff]``, years 1678 to 2261) and every input as a JSON number;
timestamps exactly on the spec's grid (which implies sorted and unique). Anything else
(``null``, ``true``/``false`` anywhere in the body, strings for numbers, time zones, gaps)
goes to the reference path.

The tensor batch form (:func:`fast_window_batch`, :mod:`flts.api.window_batch`) keeps the
same contract: only its known keys, unique string ``columns`` naming every input, one naive
timestamp per window in ``end_times``, and a regular 3-D array of finite numbers (JSON
numbers in a body without ``true``/``false``, or exactly the bytes ``encoded_windows.shape``
asks for) with ``lags`` to ``max_history_rows`` rows per window.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np

from flts.api.schemas import EncodedWindows, ForecastRequest, WindowBatchRequest
from flts.api.window_batch import ENCODED_DTYPES, build_windows, column_order
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows

#: Top-level keys each body may carry (the models forbid others).
_REQUEST_KEYS = frozenset(ForecastRequest.model_fields)
_WINDOW_BATCH_KEYS = frozenset(WindowBatchRequest.model_fields)
_ENCODED_KEYS = frozenset(EncodedWindows.model_fields)
#: Naive ISO 8601 timestamps, one per line; the reference path parses these identically.
#: Years 1678 to 2261 only: ``datetime64[ns]`` silently wraps around outside 1677-2262.
_TIMES = re.compile(
    r"(?:(?:1(?:6(?:7[89]|[89]\d)|[789]\d\d)|2(?:[01]\d\d|2[0-5]\d|26[01]))"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,9})?\n)+"
)


@dataclass(frozen=True)
class Compiled:
    """What the fast path needs from a feature spec, computed once per spec."""

    lags: int
    horizon: int
    n_inputs: int
    step_ns: int
    time_column: str
    values_of: Callable[[Any], Any]
    time_of: Callable[[Any], Any]
    #: ``0 .. lags-1`` (window positions) and ``step * (1 .. horizon)`` (target offsets).
    positions: np.ndarray
    offsets: np.ndarray


@lru_cache(maxsize=64)
def compile_spec(spec: FeatureSpec) -> Compiled:
    """The spec's fast-path form (``FeatureSpec`` is frozen and hashable)."""
    inputs = spec.inputs
    name = inputs[0]
    return Compiled(
        lags=spec.lags,
        horizon=spec.horizon,
        n_inputs=len(inputs),
        step_ns=int(spec.step.value),
        time_column=spec.time_column,
        # itemgetter of one name returns the value, not a 1-tuple: keep rows 2-D.
        values_of=itemgetter(*inputs) if len(inputs) > 1 else (lambda row: (row[name],)),
        time_of=itemgetter(spec.time_column),
        positions=np.arange(spec.lags),
        offsets=np.timedelta64(int(spec.step.value), "ns") * np.arange(1, spec.horizon + 1),
    )


@dataclass(frozen=True)
class FastBatch:
    """Validated windows of one or more requests (one model), and each request's horizon."""

    windows: Windows
    horizons: list[int]


def _on_lines(times: list[str]) -> bool:
    """Every entry one timestamp :data:`_TIMES` accepts (none hiding a line break)."""
    text = "\n".join(times) + "\n"
    return text.count("\n") == len(times) and _TIMES.fullmatch(text) is not None


def body_may_be_fast(body: bytes) -> bool:
    """Cheap pre-check on the raw body: JSON ``true`` and ``false`` anywhere (even inside
    strings) send the request to the reference path, because numpy would read booleans as
    numbers where the reference path reports them as not numeric.

    ``null`` needs no scan: a ``None`` can only reach a checked place (a value makes the
    value array ``object``, a time is not a ``str``, a horizon not an ``int``, a history not
    a list, a row not a dict, all deferred) or one both paths ignore (an identifier, which
    both treat as omitted, and row keys outside the spec). ``false`` is only searched when
    the body has an ``f`` at all (a ``memchr``), which forecast bodies usually do not: the
    scans of a 1 MB batch body cost more than its validation otherwise.
    """
    return b"true" not in body and (b"f" not in body or b"false" not in body)


def _horizon(document: Any, keys: frozenset[str], compiled: Compiled) -> int | None:
    """The horizon of a JSON object with only ``keys`` and a horizon the model has."""
    if type(document) is not dict or not document.keys() <= keys:
        return None
    horizon = document.get("horizon", 1)
    return horizon if type(horizon) is int and 1 <= horizon <= compiled.horizon else None


def request_horizon(document: Any, compiled: Compiled) -> int | None:
    """The horizon of one request document if its top level is fast-path material."""
    horizon = _horizon(document, _REQUEST_KEYS, compiled)
    if horizon is None:
        return None
    history = document.get("history")
    if type(history) is not list or len(history) < compiled.lags:
        return None
    return horizon


def fast_windows(documents: list[Any], spec: FeatureSpec) -> FastBatch | None:
    """Windows for request ``documents`` that all use a model with ``spec``, or ``None`` when
    any of them needs the reference path (which then reports the problems)."""
    compiled = compile_spec(spec)
    horizons: list[int] = []
    lengths: list[int] = []
    rows: list[Any] = []
    for document in documents:
        horizon = request_horizon(document, compiled)
        if horizon is None:
            return None
        history = document["history"]
        horizons.append(horizon)
        lengths.append(len(history))
        rows.extend(history)
    try:
        # Every row a dict with every column: anything else raises here, at C speed.
        if not all(type(row) is dict for row in rows):
            return None
        value_rows = list(map(compiled.values_of, rows))
        time_rows = list(map(compiled.time_of, rows))
        if not all(type(t) is str for t in time_rows):
            return None
        values = np.array(value_rows)
    except (KeyError, TypeError, ValueError):
        return None
    # Numbers only: ints and floats give an int or float array; strings, nested lists or
    # objects give another dtype or shape.
    if values.dtype.kind not in "if" or values.shape != (len(rows), compiled.n_inputs):
        return None
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all() or not _on_lines(time_rows):
        return None
    try:
        times = np.array(time_rows, dtype="datetime64[ns]")
    except ValueError:  # e.g. February 30th, which the pattern lets through
        return None
    ticks = times.view(np.int64)
    if len(lengths) == 1:  # one request: the same steps with fewer small numpy calls
        if not (np.diff(ticks) == compiled.step_ns).all():
            return None
        lags = compiled.lags
        return FastBatch(
            windows=Windows(
                x=values[None, -lags:],
                y=None,
                input_times=times[None, -lags:],
                target_times=(times[-1] + compiled.offsets)[None],
            ),
            horizons=horizons,
        )
    ends = np.cumsum(lengths)
    on_grid = np.diff(ticks) == compiled.step_ns
    on_grid[ends[:-1] - 1] = True  # steps between two requests do not count
    if not on_grid.all():
        return None
    index = ends[:, None] - compiled.lags + compiled.positions
    last = times[ends - 1]
    return FastBatch(
        windows=Windows(
            x=values[index],
            y=None,
            input_times=times[index],
            target_times=last[:, None] + compiled.offsets,
        ),
        horizons=horizons,
    )


def fast_window_batch(
    document: Any, body: bytes, spec: FeatureSpec, max_windows: int, max_rows: int
) -> tuple[Windows, int] | None:
    """Windows and horizon of a tensor batch body (:mod:`flts.api.window_batch`), or ``None``
    when anything needs the reference path."""
    compiled = compile_spec(spec)
    horizon = _horizon(document, _WINDOW_BATCH_KEYS, compiled)
    if horizon is None:
        return None
    columns, ends = document.get("columns"), document.get("end_times")
    if (
        type(columns) is not list
        or type(ends) is not list
        or not 0 < len(ends) <= max_windows
        or not all(type(name) is str for name in columns)
        or len(set(columns)) != len(columns)
        or not all(type(end) is str for end in ends)
    ):
        return None
    try:
        order = column_order(columns, spec)  # ValueError: an input is not named
    except ValueError:
        return None
    if "windows" in document:
        # numpy would read JSON booleans inside the windows as numbers.
        values = None if "encoded_windows" in document else _listed(document["windows"], body)
    else:
        values = _decoded(document.get("encoded_windows"))
    if (
        values is None
        or values.shape[0] != len(ends)
        or not compiled.lags <= values.shape[1] <= max_rows
        or values.shape[2] != len(columns)
        or not np.isfinite(values).all()
        or not _on_lines(ends)
    ):
        return None
    try:
        end_times = np.array(ends, dtype="datetime64[ns]")
    except ValueError:  # e.g. February 30th, which the pattern lets through
        return None
    return build_windows(values, end_times, order, spec), horizon


def _listed(windows: Any, body: bytes) -> np.ndarray | None:
    """``windows`` as JSON numbers -> a 3-D float array, or ``None``."""
    if type(windows) is not list or not body_may_be_fast(body):
        return None
    try:
        # Ragged windows or rows raise; strings, nulls or nested lists give another dtype.
        values = np.array(windows)
    except ValueError:
        return None
    if values.dtype.kind not in "if" or values.ndim != 3:
        return None
    return values


def _decoded(encoded: Any) -> np.ndarray | None:
    """``encoded_windows`` -> a 3-D array of its dtype, or ``None``."""
    if type(encoded) is not dict or encoded.keys() != _ENCODED_KEYS:
        return None
    dtype, shape, data = encoded["dtype"], encoded["shape"], encoded["base64"]
    if (
        type(dtype) is not str
        or dtype not in ENCODED_DTYPES
        or type(shape) is not list
        or len(shape) != 3
        or not all(type(size) is int and size > 0 for size in shape)
        or type(data) is not str
    ):
        return None
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except ValueError:
        return None
    item = np.dtype(ENCODED_DTYPES[dtype])
    if len(raw) != shape[0] * shape[1] * shape[2] * item.itemsize:
        return None
    return np.frombuffer(raw, dtype=item).reshape(shape)
