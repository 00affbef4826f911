"""Read traffic data and enforce the data contract.

A traffic table is a time column plus numeric feature columns, addressed by name. The same
checks serve a CSV upload and the JSON rows of an inference request (``validate_frame``), so
both boundaries reject bad input with the same one-line reasons.

A CSV is read :data:`CHUNK_ROWS` rows at a time: its cells arrive as strings, which take
several times the file's size in memory, so only one chunk of them is alive at once and each
is reduced to float and time arrays before the next is read. Offending rows are gathered over
all chunks, so the messages are the ones a single read of the whole file gives.
"""

from __future__ import annotations

import io
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError

#: Turns offending row positions into the words a message quotes them with.
RowLabel = Callable[[np.ndarray], str]
#: How many offending rows a message quotes before it summarises the rest.
_QUOTE = 3
#: The range of naive UTC nanosecond times (``datetime64[ns]``), as UTC timestamps.
_FIRST = pd.Timestamp.min.tz_localize("UTC")
_LAST = pd.Timestamp.max.tz_localize("UTC")
#: Rows of a CSV parsed at a time (about 4.5 MB of a typical traffic file): bounds the memory
#: of its string cells, whatever the file's size.
CHUNK_ROWS = 20_000


@dataclass(frozen=True)
class TrafficTable:
    """A validated table: a strictly increasing, regular DatetimeIndex and float64 columns
    named exactly ``spec.inputs`` (in that order). Missing cells are still NaN here: filling
    them is a recipe step, not a reading step.
    """

    frame: pd.DataFrame
    frequency: pd.Timedelta

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.frame.index)

    def __len__(self) -> int:
        return len(self.frame)


def quote(items: Sequence[Any] | np.ndarray, name: Callable[[Any], str] = str) -> str:
    """The first few ``items``, each as ``name`` words it, then how many more there are:
    ``"4, 9, 12 and 30 more"``. Only the quoted ones are named (a column may have a million
    bad rows)."""
    shown = ", ".join(name(item) for item in items[:_QUOTE])
    return shown + (f" and {len(items) - _QUOTE} more" if len(items) > _QUOTE else "")


def _csv_line(positions: np.ndarray) -> str:
    """Quote row positions as CSV line numbers (header is line 1)."""
    return quote(positions, lambda p: str(int(p) + 2))


def read_traffic_csv(
    source: str | Path | IO[str] | IO[bytes],
    spec: FeatureSpec | None = None,
    *,
    min_rows: int | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> TrafficTable:
    """Read and validate a traffic CSV, ``chunk_rows`` rows at a time; raise
    :class:`DataValidationError` listing every problem found, each in one line that names the
    column and the CSV line."""
    spec = spec or FeatureSpec()
    return _validate_chunks(
        _csv_chunks(source, chunk_rows), spec, min_rows=min_rows, row_label=_csv_line
    )


def _csv_chunks(
    source: str | Path | IO[str] | IO[bytes], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """The CSV's rows as string tables of ``chunk_rows`` rows (at least one, maybe empty); a
    file pandas cannot read is one :class:`DataValidationError`, wherever the damage is, and
    so are fields beyond the header's columns other than an empty trailing one (each line
    naming them, see :func:`csv_rows`)."""
    extra = _Offenders()
    try:
        if not isinstance(source, (str, Path)) and not source.seekable():
            # The header is read before the rows, so the stream is read back from memory.
            source = io.BytesIO(_as_bytes(source.read()))
        start = None if isinstance(source, (str, Path)) else source.tell()
        header = list(pd.read_csv(source, dtype=str, nrows=0).columns)
        if start is not None:
            assert not isinstance(source, (str, Path))
            source.seek(start)
        rows = csv_rows(
            source, header, chunk_rows, skip_header=True, keep_default_na=False, na_values=[""]
        )
        for chunk, beyond in rows:
            if len(beyond):
                if not extra:
                    extra.example = beyond.iloc[0]
                extra.positions.append(beyond.index.to_numpy())
            yield chunk
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"not a readable CSV file: {exc}".strip()) from exc
    if extra:
        raise DataValidationError(
            f"fields beyond the header's {len(header)} columns on CSV lines "
            f"{_csv_line(extra.rows())}: {extra.example!r} (a line may end in one delimiter, "
            "with nothing after it)"
        )


#: Held while a chunk is parsed with the parser's warning as an error (see csv_rows).
_PARSER_WARNINGS = threading.Lock()


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


def csv_rows(
    source: str | Path | IO[str] | IO[bytes],
    header: Sequence[str],
    chunk_rows: int,
    *,
    skip_header: bool,
    **options: Any,
) -> Iterator[tuple[pd.DataFrame, pd.Series]]:
    """The rows of a CSV read as the columns ``header`` names, by position, ``chunk_rows``
    at a time (``options`` go to ``pandas.read_csv``; ``skip_header``: the source starts
    with the header line), each chunk with the non-empty values of a field beyond the
    header's last column, indexed by row position.

    A line ending in a delimiter has one field more than the header, empty: pandas would
    read the first column as an unnamed index and shift every named one, or with
    ``index_col=False`` drop whatever the extra field holds, saying so only in a warning.
    So the extra field is read as a column of its own, for the caller to refuse when it
    holds something, and pandas' warning (two fields or more beyond the header, data it
    would drop) is a :class:`pandas.errors.ParserError`."""
    extra = "".join(header) + " extra"  # longer than any column the header names
    reader = pd.read_csv(
        source,
        header=None,
        skiprows=1 if skip_header else None,
        names=[*header, extra],
        index_col=False,
        dtype=str,
        chunksize=chunk_rows,
        **options,
    )
    with reader:
        while True:
            try:
                # Only around the parsing: the filter is process-wide. The lock keeps two
                # threads (concurrent uploads) from restoring each other's filter lists,
                # which would leave the parser's warning an error for the whole process.
                with _PARSER_WARNINGS, warnings.catch_warnings():
                    warnings.simplefilter("error", pd.errors.ParserWarning)
                    chunk = next(reader, None)
            except pd.errors.ParserWarning as exc:
                raise pd.errors.ParserError(
                    f"a line has two or more fields beyond the header's {len(header)} "
                    "columns, which the parser would drop"
                ) from exc
            if chunk is None:
                return
            beyond = chunk.pop(extra)
            yield chunk, beyond[beyond.notna() & (beyond != "")]


def _row_label(positions: np.ndarray) -> str:
    return "rows " + quote(positions, lambda p: str(int(p)))


def validate_frame(
    raw: pd.DataFrame,
    spec: FeatureSpec,
    *,
    min_rows: int | None = None,
    row_label: RowLabel | None = None,
) -> TrafficTable:
    """Validate a raw table (strings or numbers) against ``spec``.

    Checks, all reported together: time column present and parseable; every input column
    present and numeric (missing cells allowed, infinities not); timestamps unique, increasing
    and on the spec's regular grid; at least ``min_rows`` rows (default: one window,
    ``lags + horizon``). Extra columns are ignored.
    """
    return _validate_chunks(iter([raw]), spec, min_rows=min_rows, row_label=row_label)


@dataclass
class _Offenders:
    """The rows failing one check, gathered over chunks: their positions in the whole table
    and the first offending value (what a message quotes)."""

    positions: list[np.ndarray] = field(default_factory=list)
    example: Any = None

    def add(self, bad: np.ndarray, column: pd.Series, offset: int) -> None:
        if len(bad):
            if not self.positions:
                self.example = column.iloc[int(bad[0])]
            self.positions.append(bad + offset)

    def __bool__(self) -> bool:
        return bool(self.positions)

    def rows(self) -> np.ndarray:
        return np.concatenate(self.positions)


def _validate_chunks(
    chunks: Iterator[pd.DataFrame],
    spec: FeatureSpec,
    *,
    min_rows: int | None,
    row_label: RowLabel | None,
) -> TrafficTable:
    """:func:`validate_frame` over a table given as consecutive chunks of rows; each chunk is
    reduced to arrays before the next is read."""
    label = row_label or _row_label
    problems: list[str] = []
    min_rows = spec.lags + spec.horizon if min_rows is None else min_rows
    times, values, rows = _cells(chunks, spec, problems, label)

    if rows < min_rows:
        why = (
            f": lags {spec.lags} + horizon {spec.horizon}"
            if min_rows == spec.lags + spec.horizon
            else ""
        )
        problems.append(f"too few rows: {rows} (need at least {min_rows}{why})")
    frequency = spec.step
    if times is not None and len(times) > 1:
        _check_order_and_grid(times, spec, problems, label)
    if problems:
        raise DataValidationError(*problems)

    assert times is not None  # parse errors were raised above
    frame = pd.DataFrame(values, index=pd.DatetimeIndex(times, name=spec.time_column))
    return TrafficTable(frame=frame, frequency=frequency)


def validate_rows(
    raw: pd.DataFrame, spec: FeatureSpec, *, row_label: RowLabel | None = None
) -> pd.DataFrame:
    """Validate rows that arrive a few at a time (live observations): the cell checks of
    :func:`validate_frame` (columns present, times parseable, values numeric or missing, never
    infinite) without its order, grid and length checks, since late and out-of-order rows are
    the caller's to place. Returns the rows indexed by time (naive UTC), columns
    ``spec.inputs``, in the order given."""
    return _checked_cells(iter([raw]), spec, row_label or _row_label)


def read_observation_csv(
    source: str | Path | IO[str] | IO[bytes], spec: FeatureSpec
) -> pd.DataFrame:
    """:func:`validate_rows` of a CSV, problems named by CSV line."""
    return _checked_cells(_csv_chunks(source, CHUNK_ROWS), spec, _csv_line)


def _checked_cells(
    chunks: Iterator[pd.DataFrame], spec: FeatureSpec, label: RowLabel
) -> pd.DataFrame:
    problems: list[str] = []
    times, values, _ = _cells(chunks, spec, problems, label)
    if problems:
        raise DataValidationError(*problems)
    assert times is not None  # parse errors were raised above
    return pd.DataFrame(values, index=pd.DatetimeIndex(times, name=spec.time_column))


def _cells(
    chunks: Iterator[pd.DataFrame], spec: FeatureSpec, problems: list[str], label: RowLabel
) -> tuple[pd.DatetimeIndex | None, dict[str, np.ndarray], int]:
    """The time column and every input column of a table given as consecutive chunks of rows,
    parsed chunk by chunk (each is reduced to arrays before the next is read), and the row
    count; missing columns raise at once, bad cells are added to ``problems``."""
    head = [next(chunks)]
    columns = list(head[0].columns)

    if spec.time_column not in columns:
        problems.append(f"missing time column {spec.time_column!r} (columns found: {columns})")
    missing = [c for c in spec.inputs if c not in columns]
    if missing:
        problems.append(f"missing input columns {missing}")
    if problems:
        raise DataValidationError(*problems)

    time_parts: list[np.ndarray] = []
    time_error: str | None = None
    bad_times = _Offenders()
    value_parts: dict[str, list[np.ndarray]] = {c: [] for c in spec.inputs}
    not_numeric = {c: _Offenders() for c in spec.inputs}
    infinite = {c: _Offenders() for c in spec.inputs}
    rows = 0
    for chunk in _chained(head, chunks):
        parsed, bad, error = _time_values(chunk[spec.time_column])
        time_error = time_error or error
        bad_times.add(bad, chunk[spec.time_column], rows)
        if parsed is not None:
            time_parts.append(parsed.asi8)
        for column in spec.inputs:
            numbers, unreadable = _numeric_values(chunk[column])
            not_numeric[column].add(unreadable, chunk[column], rows)
            infinite[column].add(np.flatnonzero(np.isinf(numbers)), chunk[column], rows)
            value_parts[column].append(numbers)
        rows += len(chunk)
        del chunk  # the strings of one chunk at a time, no more

    times: pd.DatetimeIndex | None = None
    if time_error is not None:
        problems.append(f"time column cannot be parsed as timestamps: {time_error}")
    elif bad_times:
        problems.append(
            f"unparsable time at {label(bad_times.rows())}: {bad_times.example!r} (expected "
            "ISO 8601, e.g. 2018-02-05 23:40:00)"
        )
    else:
        times = pd.DatetimeIndex(np.concatenate(time_parts).view("datetime64[ns]"))
    values = {}
    for column in spec.inputs:
        if not_numeric[column]:
            problems.append(
                f"column {column!r} is not numeric at {label(not_numeric[column].rows())}: "
                f"{not_numeric[column].example!r}"
            )
        if infinite[column]:
            problems.append(
                f"column {column!r} has infinite values at {label(infinite[column].rows())}"
            )
        values[column] = np.concatenate(value_parts.pop(column))
    return times, values, rows


def _chained(head: list[pd.DataFrame], rest: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """``head`` then ``rest``, holding no reference to a chunk once it is handed out."""
    while head:
        yield head.pop()
    yield from rest


#: Words pandas reads as the current clock; a forecast input must carry its own times.
_CLOCK_WORDS = frozenset({"now", "today"})


def parse_times(column: pd.Series, problems: list[str], label: RowLabel) -> pd.DatetimeIndex | None:
    """ISO 8601 times as naive UTC nanoseconds, or ``None`` with a problem added. Offsets
    are converted to UTC; times outside the nanosecond range (years 1677 to 2262) and the
    words ``now``/``today`` count as unparsable."""
    parsed, bad, error = _time_values(column)
    if error is not None:
        problems.append(f"time column cannot be parsed as timestamps: {error}")
        return None
    if len(bad):
        example = column.iloc[int(bad[0])]
        problems.append(
            f"unparsable time at {label(bad)}: {example!r} (expected ISO 8601, "
            "e.g. 2018-02-05 23:40:00)"
        )
        return None
    return parsed


def _time_values(column: pd.Series) -> tuple[pd.DatetimeIndex | None, np.ndarray, str | None]:
    """The times of :func:`parse_times` (``None`` when some cannot be parsed), the positions
    of the unparsable ones, and the parser's own complaint if it gave up on the column."""
    try:
        parsed = pd.to_datetime(column, format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError) as exc:
        return None, np.zeros(0, dtype=np.intp), str(exc)
    invalid = parsed.isna().to_numpy(copy=True)
    if len(parsed) and not invalid.all():
        # pandas may parse at microsecond precision, beyond what nanoseconds can hold.
        valid = parsed[~invalid]
        invalid[~invalid] = ((valid < _FIRST) | (valid > _LAST)).to_numpy()
    invalid |= column.map(
        lambda v: isinstance(v, str) and v.strip().lower() in _CLOCK_WORDS
    ).to_numpy(dtype=bool)
    bad = np.flatnonzero(invalid)
    if len(bad):
        return None, bad, None
    # Naive UTC internally: inputs without an offset are taken as already in UTC.
    return pd.DatetimeIndex(parsed).tz_convert(None).as_unit("ns"), bad, None


def _numeric_values(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The column as float64 (missing cells NaN) and the positions of cells that are not
    numbers."""
    if pd.api.types.is_numeric_dtype(column.dtype):
        numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        return numbers, np.zeros(0, dtype=np.intp)
    coerced = pd.to_numeric(column, errors="coerce")
    numbers = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    return numbers, np.flatnonzero(np.isnan(numbers) & column.notna().to_numpy())


def _check_order_and_grid(
    times: pd.DatetimeIndex, spec: FeatureSpec, problems: list[str], label: RowLabel
) -> None:
    deltas = np.diff(times.asi8)
    duplicated = np.flatnonzero(deltas == 0) + 1
    if len(duplicated):
        problems.append(f"duplicated timestamps at {label(duplicated)}")
    backwards = np.flatnonzero(deltas < 0) + 1
    if len(backwards):
        problems.append(
            f"timestamps are not sorted: earlier than the previous row at {label(backwards)}"
        )
    if len(duplicated) or len(backwards):
        return
    step = spec.step.value
    inferred = pd.Timedelta(int(np.median(deltas)))
    if inferred.value != step:
        problems.append(
            f"sampling frequency is {inferred} but the feature spec expects {spec.step} "
            f"(frequency {spec.frequency!r})"
        )
        return
    off_grid = np.flatnonzero(deltas != step) + 1
    if len(off_grid):
        first = int(off_grid[0])
        gap = pd.Timedelta(int(deltas[first - 1]))
        problems.append(
            f"irregular sampling: {len(off_grid)} gaps or off-grid steps (first: {gap} "
            f"between {times[first - 1]} and {times[first]}, at {label(off_grid)}); "
            "resample to a regular grid first"
        )
