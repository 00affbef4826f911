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
(``YYYY-MM-DD[T ]HH:MM:SS[.fff]``) and every input as a JSON number; timestamps exactly on
the spec's grid (which implies sorted and unique). Anything else (``null``, ``true``/``false``
anywhere in the body, strings for numbers, time zones, gaps) goes to the reference path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

import numpy as np

from flts.data.spec import FeatureSpec
from flts.data.windows import Windows

#: Top-level keys a forecast request may carry (``ForecastRequest`` forbids others).
_REQUEST_KEYS = frozenset({"history", "horizon", "identifier"})
#: Naive ISO 8601 timestamps, one per line; the reference path parses these identically.
_TIMES = re.compile(
    r"(?:\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
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


def request_horizon(document: Any, compiled: Compiled) -> int | None:
    """The horizon of one request document if its top level is fast-path material."""
    if type(document) is not dict or not document.keys() <= _REQUEST_KEYS:
        return None
    horizon = document.get("horizon", 1)
    if type(horizon) is not int or not 1 <= horizon <= compiled.horizon:
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
        text = "\n".join(time_rows) + "\n"
        values = np.array(value_rows)
    except (KeyError, TypeError, ValueError):
        return None
    # Numbers only: ints and floats give an int or float array; strings, nested lists or
    # objects give another dtype or shape.
    if values.dtype.kind not in "if" or values.shape != (len(rows), compiled.n_inputs):
        return None
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all() or _TIMES.fullmatch(text) is None:
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
