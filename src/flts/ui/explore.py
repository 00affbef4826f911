"""A look at a dataset before training: what the dashboard's exploratory view draws.

Every figure is computed here from the validated table (:class:`flts.data.reader.TrafficTable`:
a regular time index and float columns with missing cells still NaN), so the page only draws:

* per column: count, missing cells, min, max, mean, standard deviation, and whether it is
  constant (one distinct value among the present cells, which a min-max scaler maps to 0 and
  a model can learn nothing from);
* the series over time, reduced on the server to at most ``points`` buckets by taking each
  bucket's mean (a file of a million rows stays a few kilobytes on the wire and a chart the
  browser draws at once; the mean keeps the level, the bucket's min and max keep the peaks),
  with an empty bucket where the rows jump days ahead (between a training and a test file);
* the daily profile (mean by hour of day) and the weekly profile (mean by day of week and
  hour) of every target;
* Pearson correlation of every input with every target, over rows where both are present.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

#: Buckets of the series over time unless the caller asks for fewer.
DEFAULT_POINTS = 600
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _number(value: Any) -> float | None:
    """A JSON-safe float: ``None`` for NaN and infinities."""
    number = float(value)
    return number if math.isfinite(number) else None


def column_summary(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One line per column: count, missing, min, max, mean, std, constant."""
    lines = []
    for name in frame.columns:
        column = frame[name]
        present = column.dropna()
        lines.append(
            {
                "column": str(name),
                "count": len(present),
                "missing": len(column) - len(present),
                "min": _number(present.min()) if len(present) else None,
                "max": _number(present.max()) if len(present) else None,
                "mean": _number(present.mean()) if len(present) else None,
                "std": _number(present.std(ddof=0)) if len(present) else None,
                "constant": present.nunique() <= 1,
            }
        )
    return lines


def downsample(frame: pd.DataFrame, columns: list[str], points: int) -> dict[str, Any]:
    """The series of ``columns`` in at most ``points`` time buckets of equal row count: each
    bucket's first time, and the mean, min and max of each column (``None`` where a bucket
    has no present cell), plus one empty bucket per jump in time (``gaps`` counts them)."""
    if points < 1:
        raise ValueError("points must be at least 1")
    n = len(frame)
    size = max(1, math.ceil(n / points))
    bucket = np.arange(n) // size
    groups = frame[columns].groupby(bucket)
    times = pd.DatetimeIndex(frame.index)[::size]

    def values(table: pd.DataFrame, name: str) -> list[float | None]:
        return [_number(v) for v in table[name].to_numpy()]

    mean, low, high = groups.mean(), groups.min(), groups.max()
    series: dict[str, Any] = {
        "rows": n,
        "bucket_rows": size,
        "times": [t.isoformat() for t in times],
        "mean": {name: values(mean, name) for name in columns},
        "min": {name: values(low, name) for name in columns},
        "max": {name: values(high, name) for name in columns},
    }
    return _break_gaps(series, times)


def _break_gaps(series: dict[str, Any], times: pd.DatetimeIndex) -> dict[str, Any]:
    """Insert an empty bucket where the rows jump far ahead (a training file and a test file
    days apart), so a chart breaks its line there instead of drawing one across the gap.
    Far ahead: more than three times the usual step between buckets."""
    series["gaps"] = 0
    if len(times) < 3:
        return series
    steps = np.diff(times.asi8)  # in the index's own unit; only compared with each other
    usual = float(np.median(steps))
    gaps = [i + 1 for i, step in enumerate(steps) if step > 3 * usual]
    for position in reversed(gaps):  # from the end, so earlier positions stay valid
        before, after = times[position - 1], times[position]
        middle = before + (after - before) / 2
        series["times"].insert(position, middle.isoformat())
        for kind in ("mean", "min", "max"):
            for column in series[kind].values():
                column.insert(position, None)
    series["gaps"] = len(gaps)
    return series


def profiles(frame: pd.DataFrame, targets: list[str]) -> dict[str, Any]:
    """Mean of each target by hour of day (24 values) and by day of week and hour
    (7 x 24 values, Monday first); ``None`` for hours without rows."""
    index = pd.DatetimeIndex(frame.index)
    hours = index.hour
    days = index.day_of_week
    daily = frame[targets].groupby(hours).mean().reindex(range(24))
    weekly = frame[targets].groupby([days, hours]).mean()
    full = pd.MultiIndex.from_product([range(7), range(24)])
    weekly = weekly.reindex(full)
    return {
        "hours": list(range(24)),
        "weekdays": list(_WEEKDAYS),
        "daily": {t: [_number(v) for v in daily[t].to_numpy()] for t in targets},
        "weekly": {
            t: [[_number(v) for v in weekly[t].to_numpy()[d * 24 : (d + 1) * 24]] for d in range(7)]
            for t in targets
        },
    }


def correlations(frame: pd.DataFrame, inputs: list[str], targets: list[str]) -> dict[str, Any]:
    """Pearson correlation of every input (rows) with every target (columns), pairwise over
    present cells; ``None`` where it is undefined (a constant column)."""
    matrix = frame[inputs + [t for t in targets if t not in inputs]].corr(method="pearson")
    return {
        "inputs": inputs,
        "targets": targets,
        "values": [[_number(matrix.loc[i, t]) for t in targets] for i in inputs],
    }


def explore(
    frame: pd.DataFrame, inputs: list[str], targets: list[str], points: int = DEFAULT_POINTS
) -> dict[str, Any]:
    """The whole exploratory view of one table (see the module docstring)."""
    index = pd.DatetimeIndex(frame.index)
    return {
        "rows": len(frame),
        "start": index[0].isoformat() if len(index) else None,
        "end": index[-1].isoformat() if len(index) else None,
        "columns": column_summary(frame[inputs]),
        "series": downsample(frame, targets, points),
        "profiles": profiles(frame, targets),
        "correlation": correlations(frame, inputs, targets),
    }
