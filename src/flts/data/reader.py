"""Read traffic data and enforce the data contract.

A traffic table is a time column plus numeric feature columns, addressed by name. The same
checks serve a CSV upload and the JSON rows of an inference request (``validate_frame``), so
both boundaries reject bad input with the same one-line reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
) -> TrafficTable:
    """Read and validate a traffic CSV; raise :class:`DataValidationError` listing every
    problem found, each in one line that names the column and the CSV line."""
    spec = spec or FeatureSpec()
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"not a readable CSV file: {exc}".strip()) from exc
    return validate_frame(raw, spec, min_rows=min_rows, row_label=_csv_line)


def read_observation_csv(
    source: str | Path | IO[str] | IO[bytes], spec: FeatureSpec
) -> pd.DataFrame:
    """Read live observation rows from a CSV (:func:`validate_rows`: the cell checks only),
    problems named by CSV line."""
    try:
        raw = pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"not a readable CSV file: {exc}".strip()) from exc
    return validate_rows(raw, spec, row_label=_csv_line)


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
    label = row_label or _row_label
    problems: list[str] = []
    min_rows = spec.lags + spec.horizon if min_rows is None else min_rows
    times, values = _cells(raw, spec, problems, label)

    if len(raw) < min_rows:
        why = (
            f": lags {spec.lags} + horizon {spec.horizon}"
            if min_rows == spec.lags + spec.horizon
            else ""
        )
        problems.append(f"too few rows: {len(raw)} (need at least {min_rows}{why})")
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
    """Validate rows that arrive one at a time (live observations): the cell checks of
    :func:`validate_frame` (columns present, times parseable, values numeric or missing, never
    infinite) without its order, grid and length checks, since late and out-of-order rows are
    the caller's to place. Returns the rows indexed by time (naive UTC), columns
    ``spec.inputs``, in the order given."""
    problems: list[str] = []
    times, values = _cells(raw, spec, problems, row_label or _row_label)
    if problems:
        raise DataValidationError(*problems)
    assert times is not None  # parse errors were raised above
    return pd.DataFrame(values, index=pd.DatetimeIndex(times, name=spec.time_column))


def _cells(
    raw: pd.DataFrame, spec: FeatureSpec, problems: list[str], label: RowLabel
) -> tuple[pd.DatetimeIndex | None, dict[str, np.ndarray]]:
    """The time column and every input column, parsed; missing columns raise at once, bad
    cells are added to ``problems``."""
    if spec.time_column not in raw.columns:
        problems.append(
            f"missing time column {spec.time_column!r} (columns found: {list(raw.columns)})"
        )
    missing = [c for c in spec.inputs if c not in raw.columns]
    if missing:
        problems.append(f"missing input columns {missing}")
    if problems:
        raise DataValidationError(*problems)
    times = parse_times(raw[spec.time_column], problems, label)
    values = {
        column: _parse_numeric(raw[column], column, problems, label) for column in spec.inputs
    }
    return times, values


#: Words pandas reads as the current clock; a forecast input must carry its own times.
_CLOCK_WORDS = frozenset({"now", "today"})


def parse_times(column: pd.Series, problems: list[str], label: RowLabel) -> pd.DatetimeIndex | None:
    """ISO 8601 times as naive UTC nanoseconds, or ``None`` with a problem added. Offsets
    are converted to UTC; times outside the nanosecond range (years 1677 to 2262) and the
    words ``now``/``today`` count as unparsable."""
    try:
        parsed = pd.to_datetime(column, format="ISO8601", errors="coerce", utc=True)
    except (ValueError, TypeError) as exc:
        problems.append(f"time column cannot be parsed as timestamps: {exc}")
        return None
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
        example = column.iloc[int(bad[0])]
        problems.append(
            f"unparsable time at {label(bad)}: {example!r} (expected ISO 8601, "
            "e.g. 2018-02-05 23:40:00)"
        )
        return None
    # Naive UTC internally: inputs without an offset are taken as already in UTC.
    return pd.DatetimeIndex(parsed).tz_convert(None).as_unit("ns")


def _parse_numeric(
    column: pd.Series, name: str, problems: list[str], label: RowLabel
) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column.dtype):
        numbers = column.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numeric = np.zeros(len(column), dtype=bool)
    else:
        coerced = pd.to_numeric(column, errors="coerce")
        numbers = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
        not_numeric = np.isnan(numbers) & column.notna().to_numpy()
    bad = np.flatnonzero(not_numeric)
    if len(bad):
        example = column.iloc[int(bad[0])]
        problems.append(f"column {name!r} is not numeric at {label(bad)}: {example!r}")
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        problems.append(f"column {name!r} has infinite values at {label(infinite)}")
    return numbers


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
