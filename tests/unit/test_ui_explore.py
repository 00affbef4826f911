"""The exploratory view's figures, checked against what they mean on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from flts.ui.explore import column_summary, correlations, downsample, explore, profiles


def _frame(rows: int = 2 * 7 * 24 * 30, seed: int = 3) -> pd.DataFrame:
    """Two weeks of 2-minute rows: ``a`` follows the hour of day, ``b = 2a + 1`` exactly,
    ``c`` is noise, ``flat`` is constant, ``holes`` has missing cells."""
    index = pd.date_range("2024-01-01", periods=rows, freq="2min")  # a Monday
    rng = np.random.default_rng(seed)
    a = index.hour.to_numpy(dtype=float)
    holes = rng.normal(size=rows)
    holes[::10] = np.nan
    return pd.DataFrame(
        {"a": a, "b": 2 * a + 1, "c": rng.normal(size=rows), "flat": 5.0, "holes": holes},
        index=index,
    )


def test_the_column_summary_counts_missing_cells_and_finds_constant_columns() -> None:
    frame = _frame()
    lines = {line["column"]: line for line in column_summary(frame)}
    assert lines["holes"]["missing"] == int(frame["holes"].isna().sum()) > 0
    assert lines["holes"]["count"] == len(frame) - lines["holes"]["missing"]
    assert lines["flat"]["constant"] is True
    assert [name for name, line in lines.items() if line["constant"]] == ["flat"]
    assert lines["a"]["min"] == 0.0
    assert lines["a"]["max"] == 23.0
    assert lines["b"]["mean"] == pytest.approx(2 * frame["a"].mean() + 1)
    assert lines["flat"]["std"] == 0.0


def test_a_column_without_any_value_has_no_figures() -> None:
    frame = pd.DataFrame({"empty": [np.nan, np.nan]}, index=pd.date_range("2024", periods=2))
    (line,) = column_summary(frame)
    assert line == {
        "column": "empty",
        "count": 0,
        "missing": 2,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "constant": True,
    }


@pytest.mark.parametrize("points", [1, 7, 600, 50_000])
def test_downsampling_keeps_at_most_the_asked_buckets_and_their_extremes(points: int) -> None:
    frame = _frame()
    series = downsample(frame, ["a", "c"], points)
    buckets = len(series["times"])
    assert buckets <= points
    assert series["gaps"] == 0  # a regular series: no break
    assert buckets == len(series["mean"]["a"]) == len(series["max"]["c"])
    if points >= len(frame):
        assert buckets == len(frame)  # nothing to reduce: every row is its own bucket
    # every row is in one bucket: the overall extremes survive the reduction
    assert max(series["max"]["c"]) == pytest.approx(frame["c"].max())
    assert min(series["min"]["c"]) == pytest.approx(frame["c"].min())
    assert series["times"][0] == frame.index[0].isoformat()


def test_a_jump_in_time_gets_an_empty_bucket_so_the_line_breaks() -> None:
    first = _frame(300)
    second = _frame(300, seed=4)
    second.index = second.index + pd.Timedelta(days=20)  # a test file three weeks later
    series = downsample(pd.concat([first, second]), ["a"], 60)
    assert series["gaps"] == 1
    empty = series["mean"]["a"].index(None)
    times = pd.DatetimeIndex(series["times"])
    assert times[empty - 1] < times[empty] < times[empty + 1]
    assert times[empty + 1] >= second.index[0]
    assert len(series["min"]["a"]) == len(series["max"]["a"]) == len(times)
    assert downsample(first, ["a"], 60)["gaps"] == 0


def test_downsampling_refuses_zero_points() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        downsample(_frame(), ["a"], 0)


def test_profiles_are_means_by_hour_and_by_weekday_and_hour() -> None:
    frame = _frame()
    shown = profiles(frame, ["a"])
    assert shown["daily"]["a"] == [float(h) for h in range(24)]  # a is the hour itself
    weekly = shown["weekly"]["a"]
    assert len(weekly) == 7
    assert all(day == [float(h) for h in range(24)] for day in weekly)
    assert shown["weekdays"][0] == "Mon"


def test_profiles_leave_hours_without_rows_empty() -> None:
    index = pd.date_range("2024-01-01 00:00", periods=30, freq="2min")  # Monday, hour 0 only
    shown = profiles(pd.DataFrame({"a": 1.0}, index=index), ["a"])
    assert shown["daily"]["a"][0] == 1.0
    assert shown["daily"]["a"][1:] == [None] * 23
    assert shown["weekly"]["a"][1] == [None] * 24


def test_correlations_of_inputs_with_targets() -> None:
    frame = _frame()
    shown = correlations(frame, ["a", "c", "flat"], ["b"])
    values = dict(zip(shown["inputs"], (row[0] for row in shown["values"]), strict=True))
    assert values["a"] == pytest.approx(1.0)  # b is a linear function of a
    assert abs(values["c"]) < 0.05  # noise
    assert values["flat"] is None  # undefined for a constant column, not NaN in the JSON


def test_the_whole_view_covers_the_table() -> None:
    frame = _frame()
    view = explore(frame, ["a", "c"], ["b"], points=100)
    assert view["rows"] == len(frame)
    assert view["start"] == frame.index[0].isoformat()
    assert [line["column"] for line in view["columns"]] == ["a", "c"]
    assert len(view["series"]["times"]) <= 100
