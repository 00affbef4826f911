"""The forecast request forms, each decoded and validated in one place.

Acceptance is decided here and only here, in two typed steps per request:

1. **The envelope** (:func:`decode`): msgspec decodes the body into :class:`ForecastCall`
   (``POST /v1/forecast``) or :class:`BatchCall` (``POST /v1/forecast/batch``: the row form
   ``requests`` or the tensor form), checking every key and type in C. History rows and
   window arrays stay raw JSON (``msgspec.Raw``) because their shape depends on the model,
   which the envelope names.
2. **The data, with the model's feature spec** (:func:`row_windows`, :func:`tensor_windows`):
   rows are decoded by a decoder built once per spec (one typed field per input column,
   extra columns skipped unread), then checked as arrays: every value a number (or a numeric
   string, as in CSV uploads), finite, times parsable and on the spec's grid, at least
   ``lags`` rows, a horizon the model was trained for (docs/architecture.md, rule 2).

Both steps are the whole contract, with no second copy: when one rejects a request it raises
:class:`RejectedError`, and only then does :mod:`flts.api.diagnosis` spend time describing every
problem precisely (the same lines as CSV uploads get). Times take numpy's C parser when
they are naive ISO 8601 (what clients send); other spellings (offsets, for instance) take
the CSV parser :func:`flts.data.reader.parse_times`, so both give the same instants.
"""

from __future__ import annotations

import binascii
import itertools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import numpy as np
import orjson
import pandas as pd

from flts.data.reader import parse_times, quote
from flts.data.spec import FeatureSpec
from flts.data.windows import Windows
from flts.exceptions import DataValidationError, PayloadTooLargeError
from flts.models.intervals import MAX_LEVELS, check_levels

#: Most forecasts one batch call may carry (requests of the row form, windows of the tensor
#: form).
MAX_BATCH_ITEMS = 1024
#: numpy dtypes of ``encoded_windows.dtype`` (little-endian whatever the server's byte order).
ENCODED_DTYPES = {"float32": "<f4", "float64": "<f8"}

T = TypeVar("T")
Horizon = Annotated[int, msgspec.Meta(ge=1)]
NonEmpty = msgspec.Meta(min_length=1)
#: Interval levels in percent; uniqueness is checked by ``check_levels`` once decoded.
Levels = Annotated[
    list[Annotated[float, msgspec.Meta(gt=0, lt=100)]], msgspec.Meta(max_length=MAX_LEVELS)
]


class RejectedError(Exception):
    """A request the forms refuse; ``reason`` is a short account, the diagnosis the full one
    (never shown to a client unless the diagnosis finds nothing more precise)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ForecastCall(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/forecast`` (documented by ``schemas.ForecastRequest``)."""

    history: list[msgspec.Raw] | None = None  # None: the stored observations (service)
    identifier: str | None = None
    horizon: Horizon = 1
    intervals: Levels = msgspec.field(default_factory=list)

    @property
    def rows(self) -> list[msgspec.Raw]:
        """The history; a call without one never reaches the forms (the service fills it)."""
        if self.history is None:
            raise RejectedError("a history is required")
        return self.history


class BatchCall(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /v1/forecast/batch``: ``requests`` alone (row form, documented by
    ``schemas.BatchForecastRequest``) or the tensor keys (``schemas.WindowBatchRequest``)."""

    requests: Annotated[list[ForecastCall], NonEmpty] | msgspec.UnsetType = msgspec.UNSET
    identifier: str | msgspec.UnsetType | None = msgspec.UNSET
    horizon: Horizon | msgspec.UnsetType = msgspec.UNSET
    intervals: Levels | msgspec.UnsetType = msgspec.UNSET
    columns: Annotated[list[str], NonEmpty] | msgspec.UnsetType = msgspec.UNSET
    end_times: Annotated[list[str], NonEmpty] | msgspec.UnsetType = msgspec.UNSET
    # Decoded strictly (numbers are numbers) once the form is known: see TensorCall.
    windows: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    encoded_windows: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET

    @property
    def is_tensor(self) -> bool:
        return any(
            value is not msgspec.UNSET
            for value in (self.columns, self.end_times, self.windows, self.encoded_windows)
        )


class EncodedWindows(msgspec.Struct, forbid_unknown_fields=True):
    dtype: Literal["float32", "float64"]
    shape: Annotated[list[int], msgspec.Meta(min_length=3, max_length=3)]
    base64: str


@dataclass(frozen=True)
class TensorCall:
    """The tensor form once its arrays are decoded."""

    identifier: str | None
    horizon: int
    intervals: tuple[float, ...]
    columns: list[str]
    end_times: list[str]
    windows: list[list[list[float]]] | None
    encoded: EncodedWindows | None


# The envelope is lax about scalars as pydantic is (``"horizon": 2.0`` is 2); numbers inside
# windows are strict (a string is not a number there), so they have their own decoders.
_ENVELOPES: dict[type[Any], msgspec.json.Decoder[Any]] = {
    ForecastCall: msgspec.json.Decoder(ForecastCall, strict=False),
    BatchCall: msgspec.json.Decoder(BatchCall, strict=False),
}
_WINDOWS = msgspec.json.Decoder(Annotated[list[list[list[float]]], NonEmpty])
_ENCODED = msgspec.json.Decoder(EncodedWindows)


def validation_problem(exc: msgspec.ValidationError) -> str:
    """msgspec's ``Expected int - at `$.horizon``` as ``horizon: Expected int``."""
    message, _, path = str(exc).partition(" - at `$")
    path = path.rstrip("`").lstrip(".")
    return f"{path}: {message}" if path else message


def decode(kind: type[T], body: bytes) -> T:
    """The envelope of ``body``; :class:`RejectedError` when it is not one."""
    try:
        call: T = _ENVELOPES[kind].decode(body)
    except msgspec.ValidationError as exc:
        raise RejectedError(validation_problem(exc)) from exc
    except msgspec.DecodeError as exc:
        raise RejectedError(f"malformed JSON: {exc}") from exc
    return call


def tensor_call(call: BatchCall) -> TensorCall:
    """The tensor form's arrays, decoded strictly; :class:`RejectedError` otherwise."""
    if call.requests is not msgspec.UNSET:
        raise RejectedError("both forms")
    if call.columns is msgspec.UNSET or call.end_times is msgspec.UNSET:
        raise RejectedError("columns and end_times are required")
    try:
        windows = None if call.windows is msgspec.UNSET else _WINDOWS.decode(call.windows)
        encoded = (
            None if call.encoded_windows is msgspec.UNSET else _ENCODED.decode(call.encoded_windows)
        )
    except msgspec.ValidationError as exc:
        raise RejectedError(validation_problem(exc)) from exc
    return TensorCall(
        identifier=None if call.identifier is msgspec.UNSET else call.identifier,
        horizon=1 if call.horizon is msgspec.UNSET else call.horizon,
        intervals=() if call.intervals is msgspec.UNSET else check_levels(call.intervals),
        columns=call.columns,
        end_times=call.end_times,
        windows=windows,
        encoded=encoded,
    )


# ----------------------------------------------------------------------------- limits
# Sizes are checked before values (413 before 422), in the acceptance and the diagnosis alike.


def check_history(rows: int, limit: int, prefix: str = "") -> None:
    """413 for a history over ``limit`` rows."""
    if rows > limit:
        raise PayloadTooLargeError(
            f"{prefix}history has {rows} rows, over the limit of {limit} rows"
        )


def check_requests(count: int) -> None:
    """413 for a row-form batch over :data:`MAX_BATCH_ITEMS` requests."""
    if count > MAX_BATCH_ITEMS:
        raise PayloadTooLargeError(
            f"{count} requests in one batch, over the limit of {MAX_BATCH_ITEMS}"
        )


def check_tensor(count: int, rows: int, limit: int) -> None:
    """413 for a tensor over :data:`MAX_BATCH_ITEMS` windows or with a window over ``limit``
    rows."""
    if count > MAX_BATCH_ITEMS:
        raise PayloadTooLargeError(
            f"{count} windows in one batch, over the limit of {MAX_BATCH_ITEMS}"
        )
    if rows > limit:
        raise PayloadTooLargeError(f"a window has {rows} rows, over the limit of {limit} rows")


# ----------------------------------------------------------------------------- rows


#: A row value as decoded: checked by :func:`_numbers`.
_Value = float | str | msgspec.UnsetType | None


@dataclass(frozen=True)
class RowForm:
    """What validating rows needs from a feature spec, built once per spec."""

    rows: msgspec.json.Decoder[list[Any]]
    #: The common case only, tried first: a time string and a JSON number for every input
    #: (:func:`_decode_rows`).
    numbers: msgspec.json.Decoder[list[Any]]
    #: The whole ``POST /v1/forecast`` body in the common case, rows included, in one pass
    #: (:func:`decode_numeric`).
    calls: msgspec.json.Decoder[Any]
    values_of: Callable[[Any], tuple[Any, ...]]
    time_of: Callable[[Any], Any]
    lags: int
    horizon: int
    spec: FeatureSpec
    step_ns: int
    width: int  # fields of a row: the time and the inputs
    positions: np.ndarray  # 0 .. lags-1
    offsets: np.ndarray  # step * (1 .. horizon)


@lru_cache(maxsize=64)
def row_form(spec: FeatureSpec) -> RowForm:
    """The typed row decoder of ``spec`` (``FeatureSpec`` is frozen and hashable).

    Fields are named ``c0..cN`` and renamed to the columns, so any column name works. A value
    may be a number, a string (parsed as CSV cells are), ``null`` or absent (both reported as
    missing); anything else (booleans, arrays, objects) is refused by the decoder itself.
    """
    columns = (spec.time_column, *spec.inputs)
    fields: list[tuple[str, Any, Any]] = [("c0", str | msgspec.UnsetType, msgspec.UNSET)]
    fields += [(f"c{i}", _Value, msgspec.UNSET) for i in range(1, len(columns))]
    rename = {f"c{i}": name for i, name in enumerate(columns)}
    # gc=False: rows hold only strings, numbers and None (no cycles), so the collector need
    # not track the hundreds a busy replica decodes per loop iteration.
    row = msgspec.defstruct("Row", fields, rename=rename, gc=False)
    numeric: list[tuple[str, Any]] = [("c0", str)]
    numeric += [(f"c{i}", float) for i in range(1, len(columns))]
    numeric_row = msgspec.defstruct("NumericRow", numeric, rename=rename, gc=False)
    # ForecastCall's fields with the history typed and required, and the same constraints.
    numeric_call = msgspec.defstruct(
        "NumericForecastCall",
        [
            ("history", list[numeric_row]),  # type: ignore[valid-type]
            ("identifier", str | None, None),
            ("horizon", Horizon, 1),
            ("intervals", Levels, msgspec.field(default_factory=list)),
        ],
        forbid_unknown_fields=True,
        namespace={"rows": property(attrgetter("history"))},
    )
    names = [f"c{i}" for i in range(1, len(columns))]
    # attrgetter of one name returns the value, not a 1-tuple: keep rows 2-D.
    single = attrgetter(names[0])
    values_of = attrgetter(*names) if len(names) > 1 else (lambda r: (single(r),))
    step = int(spec.step.value)
    return RowForm(
        rows=msgspec.json.Decoder(list[row]),  # type: ignore[valid-type]
        numbers=msgspec.json.Decoder(list[numeric_row]),  # type: ignore[valid-type]
        calls=msgspec.json.Decoder(numeric_call),
        values_of=values_of,
        time_of=attrgetter("c0"),
        lags=spec.lags,
        horizon=spec.horizon,
        spec=spec,
        step_ns=step,
        width=len(columns),
        positions=np.arange(spec.lags),
        offsets=np.timedelta64(step, "ns") * np.arange(1, spec.horizon + 1),
    )


def stored_history(rows: pd.DataFrame, spec: FeatureSpec, identifier: str) -> list[msgspec.Raw]:
    """A history built from the newest stored observations of ``identifier`` (``rows``, as
    :meth:`flts.live.observations.ObservationLog.tail` returns them), refused with the reason
    when they cannot make a window: too few, a gap on the grid, a missing value."""
    where = f"the stored observations of {identifier!r}"
    if len(rows) < spec.lags:
        raise DataValidationError(
            f"{where}: {len(rows)} rows, a forecast needs the newest {spec.lags} (lags); "
            "send more rows with POST /v1/observations, or a history"
        )
    times = pd.DatetimeIndex(rows.index)
    gaps = np.flatnonzero(np.diff(times.asi8) != spec.step.value)
    if len(gaps):
        last = int(gaps[-1])
        raise DataValidationError(
            f"{where}: rows missing between {times[last].isoformat()} and "
            f"{times[last + 1].isoformat()}, within the newest {spec.lags} rows; send them "
            "with POST /v1/observations, or a history"
        )
    values = rows[list(spec.inputs)]
    incomplete = np.flatnonzero(values.isna().to_numpy().any(axis=1))
    if len(incomplete):
        raise DataValidationError(
            f"{where}: missing values at {quote([t.isoformat() for t in times[incomplete]])}; "
            "a forecast needs every value of its rows"
        )
    return [
        msgspec.Raw(
            orjson.dumps(
                {spec.time_column: t.isoformat(), **dict(zip(spec.inputs, v, strict=True))}
            )
        )
        for t, v in zip(times, values.to_numpy().tolist(), strict=True)
    ]


def decode_numeric(body: bytes, form: RowForm) -> Any | None:
    """A ``POST /v1/forecast`` body decoded in one pass, rows included, when it is the common
    case: a history of rows whose times are strings and whose inputs are all JSON numbers
    (``form``: the row form of the model that will answer). ``None`` for anything else, which
    :func:`decode` and :func:`row_windows` then take or refuse as usual.

    The two-step path reads the body twice (the envelope, then the rows once the model is
    known); this reads it once, with exactly the checks both steps would make of such a body
    (strictly, so a value it decodes is one the two steps decode the same way). The rows are
    :func:`numeric_windows`' to check further (lengths, finite values, times on the grid).
    """
    try:
        return form.calls.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def row_windows(calls: Sequence[ForecastCall], spec: FeatureSpec) -> Windows:
    """The last window of each call's history, all for one model with ``spec``."""
    form = row_form(spec)
    lengths = _lengths(form, calls)
    rows: list[Any] = []
    for call in calls:
        rows.extend(call.rows)
    values, times = _decode_rows(form, b"[" + b",".join(rows) + b"]")
    return _windows(form, lengths, values, times)


def numeric_windows(calls: Sequence[Any], spec: FeatureSpec) -> Windows:
    """:func:`row_windows` of calls :func:`decode_numeric` decoded (their rows typed)."""
    form = row_form(spec)
    lengths = _lengths(form, calls)
    values, times = _numeric_table(form, [row for call in calls for row in call.history])
    return _windows(form, lengths, values, times)


def _lengths(form: RowForm, calls: Sequence[Any]) -> list[int]:
    """Rows of each call's history, refused when too few for a window or when the horizon
    is out of the model's range."""
    lengths: list[int] = []
    for call in calls:
        rows = len(call.rows)
        if not form.lags <= rows or not call.horizon <= form.horizon:
            raise RejectedError("too few rows or a horizon out of range")
        lengths.append(rows)
    return lengths


def _windows(form: RowForm, lengths: list[int], values: np.ndarray, times: np.ndarray) -> Windows:
    """The last window of each history (``lengths`` rows each, one after another in
    ``values`` and ``times``), refused when times are off the grid."""
    ticks = times.view(np.int64)
    lags = form.lags
    if len(lengths) == 1:  # one request: the same steps with fewer small numpy calls
        if not (np.diff(ticks) == form.step_ns).all():
            raise RejectedError("times off the grid")
        return Windows(
            x=values[None, -lags:],
            y=None,
            input_times=times[None, -lags:],
            target_times=(times[-1] + form.offsets)[None],
        )
    if len(values) == lags * len(lengths):  # every history exactly one window: reshapes
        count = len(lengths)
        if not (np.diff(ticks.reshape(count, lags), axis=1) == form.step_ns).all():
            raise RejectedError("times off the grid")
        return Windows(
            x=values.reshape(count, lags, values.shape[1]),
            y=None,
            input_times=times.reshape(count, lags),
            target_times=times[lags - 1 :: lags, None] + form.offsets,
        )
    ends = np.cumsum(lengths)
    on_grid = np.diff(ticks) == form.step_ns
    on_grid[ends[:-1] - 1] = True  # steps between two requests do not count
    if not on_grid.all():
        raise RejectedError("times off the grid")
    index = ends[:, None] - form.lags + form.positions
    return Windows(
        x=values[index],
        y=None,
        input_times=times[index],
        target_times=times[ends - 1][:, None] + form.offsets,
    )


def _decode_rows(form: RowForm, rows: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The values (finite float64, one row per row) and times of ``rows`` (a JSON array of
    row objects); :class:`RejectedError` when they are not acceptable.

    Nearly every client sends JSON numbers, so :attr:`RowForm.numbers` (a time string and a
    number for every input, nothing else) is tried first: its rows are then plain tuples
    (``astuple``, in C) and the whole table one object array cast to float64, with no type
    discovery per value. Anything else it refuses (numeric strings, nulls, absent values,
    wrong types) is decoded again by :attr:`RowForm.rows`, which takes or refuses it exactly
    as the contract says (the same checks and reasons either way).
    """
    try:
        numeric = form.numbers.decode(rows)
    except msgspec.ValidationError:
        pass
    else:
        return _numeric_table(form, numeric)
    try:
        decoded = form.rows.decode(rows)
    except msgspec.ValidationError as exc:
        raise RejectedError(validation_problem(exc)) from exc
    return _numbers(list(map(form.values_of, decoded))), _times(list(map(form.time_of, decoded)))


def _numeric_table(form: RowForm, rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_decode_rows` of rows :attr:`RowForm.numbers` decoded (a time string and a
    float in every row)."""
    count = len(rows)
    cells = np.fromiter(
        itertools.chain.from_iterable(map(msgspec.structs.astuple, rows)),
        dtype=object,
        count=count * form.width,
    ).reshape(count, form.width)
    values = cells[:, 1:].astype(np.float64)
    # msgspec refuses numbers no float holds, so these are finite; checked as _numbers does,
    # so that no decoder change can ever let an infinity through.
    if not np.isfinite(values).all():
        raise RejectedError("values that are not finite numbers")
    return values, _times(cells[:, 0].tolist())


def _numbers(rows: list[tuple[Any, ...]]) -> np.ndarray:
    """Row values as finite float64: JSON numbers at C speed, strings as CSV cells are read
    (:func:`pandas.to_numeric`); null, absent or non-numeric values are refused."""
    values = np.array(rows)
    if values.dtype.kind != "f":  # strings, nulls or absent values among the numbers
        cells = np.array(rows, dtype=object)
        if any(v is None or v is msgspec.UNSET for v in cells.flat):
            raise RejectedError("missing values")
        values = np.column_stack(
            [pd.to_numeric(column, errors="coerce").astype(np.float64) for column in cells.T]
        )
    if not np.isfinite(values).all():  # NaN: a non-numeric string; inf: an infinite one
        raise RejectedError("values that are not finite numbers")
    return values


#: Naive ISO 8601 timestamps, one per line, that numpy and the CSV parser read identically.
#: Years 1678 to 2261 only: ``datetime64[ns]`` silently wraps around outside 1677-2262.
_NAIVE_TIMES = re.compile(
    r"(?:(?:1(?:6(?:7[89]|[89]\d)|[789]\d\d)|2(?:[01]\d\d|2[0-5]\d|26[01]))"
    r"-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])[T ](?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(?:\.\d{1,9})?\n)+"
)


def _times(times: list[Any]) -> np.ndarray:
    """Time strings as naive UTC ``datetime64[ns]`` (the time column's rules)."""
    if not set(map(type, times)) <= {str}:  # all(type(t) is str ...), in C
        raise RejectedError("a time is not a string")
    text = "\n".join(times) + "\n"
    if text.count("\n") == len(times) and _NAIVE_TIMES.fullmatch(text) is not None:
        try:
            return np.array(times, dtype="datetime64[ns]")
        except ValueError:  # e.g. February 30th, which the pattern lets through
            raise RejectedError("unparsable times") from None
    problems: list[str] = []
    parsed = parse_times(pd.Series(times, dtype=object), problems, str)
    if parsed is None:
        raise RejectedError("unparsable times")
    return parsed.to_numpy(dtype="datetime64[ns]")


# ----------------------------------------------------------------------------- tensors


def _at(name: str, positions: Sequence[Any] | np.ndarray) -> str:
    """``name[i]`` for the first few positions (:func:`~flts.data.reader.quote`)."""
    return quote(positions, f"{name}[{{}}]".format)


def claimed_size(call: TensorCall) -> tuple[int, int]:
    """How many windows a tensor call claims and the most rows one of them has (for the 413
    limits, checked before its values)."""
    if call.windows is not None:
        return len(call.windows), max((len(w) for w in call.windows), default=0)
    if call.encoded is not None:
        return call.encoded.shape[0], call.encoded.shape[1]
    return 0, 0


def tensor_windows(call: TensorCall, spec: FeatureSpec) -> Windows:
    """The windows of a tensor call; :class:`DataValidationError` listing every problem
    (positions quoted as ``windows[i]``, ``windows[i][row]``, ``end_times[i]``).

    Here acceptance and description are one function: each check is a numpy operation on
    the whole tensor, and only a failed one spends time naming positions.
    """
    problems = horizon_problems(call.horizon, spec)
    columns = call.columns
    if len(set(columns)) != len(columns):
        duplicated = sorted(name for name, count in Counter(columns).items() if count > 1)
        problems.append(f"columns names {quote(duplicated, repr)} more than once")
    missing = [c for c in spec.inputs if c not in columns]
    if missing:
        problems.append(
            f"columns lacks the model's input(s) {quote(missing, repr)} "
            f"(the model needs {list(spec.inputs)})"
        )
    if call.windows is not None and call.encoded is None:
        values = _listed(call.windows, len(columns), spec.lags, problems)
    elif call.encoded is not None and call.windows is None:
        values = _decoded(call.encoded, len(columns), spec.lags, problems)
    else:
        values = None
        problems.append("give the windows as exactly one of windows and encoded_windows")
    if values is not None and len(call.end_times) != len(values):
        problems.append(
            f"end_times has {len(call.end_times)} entries for {len(values)} windows: "
            "one per window (the time of its last row)"
        )
    ends = _end_times(call.end_times, problems)
    if problems:
        raise DataValidationError(*problems)
    # Every path that leaves these None added a problem, raised above.
    assert values is not None
    assert ends is not None
    finite = np.isfinite(values).all(axis=(1, 2))
    if not finite.all():
        raise DataValidationError(f"non-finite values at {_at('windows', np.flatnonzero(~finite))}")
    return _build(values, ends, columns, spec)


def horizon_problems(horizon: int, spec: FeatureSpec) -> list[str]:
    """A horizon the model was not trained for, as a problem line (none when it was)."""
    if horizon <= spec.horizon:
        return []
    return [
        f"horizon {horizon} is out of range: this model forecasts 1 to {spec.horizon} steps "
        "(the horizon it was trained and evaluated for)"
    ]


def _build(values: np.ndarray, ends: np.ndarray, columns: list[str], spec: FeatureSpec) -> Windows:
    """Windows from ``values`` ``(n, rows >= lags, columns)`` and each window's last time
    ``ends``: the last ``lags`` rows, inputs in spec order."""
    lags = spec.lags
    if tuple(columns) == spec.inputs:
        x = values[:, -lags:]
    else:
        x = values[:, -lags:, [columns.index(name) for name in spec.inputs]]
    step = np.timedelta64(row_form(spec).step_ns, "ns")  # spec.step parses text each call
    last = ends[:, None]
    return Windows(
        x=np.ascontiguousarray(x, dtype=np.float64),
        y=None,
        input_times=last - step * np.arange(lags - 1, -1, -1),
        target_times=last + step * np.arange(1, spec.horizon + 1),
    )


def _listed(
    windows: list[list[list[float]]], width: int, lags: int, problems: list[str]
) -> np.ndarray | None:
    """``(n, lags, width)`` values from JSON numbers (windows may differ in length)."""
    try:
        values = np.array(windows, dtype=np.float64)  # regular: one C call
    except ValueError:  # ragged: described below
        values = np.empty((0, 0))
    if values.ndim == 3 and values.shape[1] >= lags and values.shape[2] == width:
        return values
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


def _end_times(end_times: list[str], problems: list[str]) -> np.ndarray | None:
    """``end_times`` as naive UTC ``datetime64[ns]``, or ``None`` with the problem added."""
    try:
        return _times(end_times)
    except RejectedError:
        pass

    def label(positions: np.ndarray) -> str:
        return _at("end_times", positions)

    parsed = parse_times(pd.Series(end_times, dtype=object), problems, label)
    return None if parsed is None else parsed.to_numpy(dtype="datetime64[ns]")
