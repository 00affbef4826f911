"""The data contract: valid tables pass, every broken rule is named in one line."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from flts.data import FeatureSpec, read_traffic_csv, validate_frame
from flts.data.spec import LTE_FEATURES
from flts.exceptions import DataValidationError


def _csv(frame: pd.DataFrame) -> io.StringIO:
    return io.StringIO(frame.to_csv(index=False))


def test_valid_csv_reads_all_rows_in_spec_order(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    shuffled = frame[["time", *reversed(LTE_FEATURES)]].assign(comment="free text")
    table = read_traffic_csv(_csv(shuffled), spec)
    assert list(table.frame.columns) == list(spec.inputs)
    assert len(table) == len(frame)
    assert table.frequency == pd.Timedelta("2min")
    np.testing.assert_allclose(table.frame["down"].to_numpy(), frame["down"].to_numpy())


def test_missing_cells_stay_nan_for_the_recipe(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    frame.loc[5, "rb_up"] = np.nan
    table = read_traffic_csv(_csv(frame), spec)
    assert np.isnan(table.frame["rb_up"].iloc[5])


def _problems(frame: pd.DataFrame, spec: FeatureSpec) -> tuple[str, ...]:
    with pytest.raises(DataValidationError) as caught:
        read_traffic_csv(_csv(frame), spec)
    return caught.value.problems


def test_missing_time_column(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    (problem,) = _problems(frame.drop(columns="time"), spec)
    assert "missing time column 'time'" in problem


def test_missing_input_columns_are_listed(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    (problem,) = _problems(frame.drop(columns=["up", "rb_up"]), spec)
    assert "['up', 'rb_up']" in problem


def test_unparsable_time_names_the_csv_line(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    frame.loc[3, "time"] = "yesterday"
    (problem,) = _problems(frame, spec)
    # Row 3 is CSV line 5: the header is line 1.
    assert "unparsable time at 5" in problem
    assert "'yesterday'" in problem


def test_non_numeric_and_infinite_values_are_all_reported(
    frame: pd.DataFrame, spec: FeatureSpec
) -> None:
    frame["down"] = frame["down"].astype(object)
    frame.loc[7, "down"] = "n/a"
    frame.loc[9, "up"] = np.inf
    problems = _problems(frame, spec)
    assert any("'down' is not numeric at 9: 'n/a'" in p for p in problems)
    assert any("'up' has infinite values at 11" in p for p in problems)


def test_duplicated_timestamps(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    times = frame["time"].tolist()
    times[10] = times[9]
    frame["time"] = times
    problems = _problems(frame, spec)
    assert any("duplicated timestamps at 12" in p for p in problems)


def test_unsorted_timestamps(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    frame.loc[[10, 11], "time"] = frame.loc[[11, 10], "time"].to_numpy()
    problems = _problems(frame, spec)
    # Row 11 now precedes row 10 in time: CSV line 13.
    assert any("not sorted" in p and "at 13" in p for p in problems)


def test_gap_is_reported_with_its_size(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    problems = _problems(frame.drop(index=[100, 101, 102]), spec)
    assert any("irregular sampling: 1 gaps" in p and "0 days 00:08:00" in p for p in problems)


def test_wrong_frequency_is_named(frame: pd.DataFrame) -> None:
    problems = _problems(frame, FeatureSpec(frequency="5min"))
    assert any("frequency is 0 days 00:02:00" in p and "'5min'" in p for p in problems)


def test_too_few_rows(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    problems = _problems(frame.iloc[:5], spec)
    assert any("too few rows: 5" in p for p in problems)


def test_not_a_csv_at_all(spec: FeatureSpec) -> None:
    with pytest.raises(DataValidationError):
        read_traffic_csv(io.StringIO(""), spec)


def test_json_records_use_the_same_checks(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    """Inference requests arrive as records with numbers, not strings."""
    records = frame.iloc[:20].to_dict(orient="records")
    table = validate_frame(pd.DataFrame.from_records(records), spec)
    assert len(table) == 20
    records[3]["down"] = float("nan")
    records[4]["up"] = float("inf")
    with pytest.raises(DataValidationError, match="'up' has infinite values at rows 4"):
        validate_frame(pd.DataFrame.from_records(records), spec)


def test_timezone_offsets_are_normalised_to_utc(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    frame = frame.iloc[:20].copy()
    frame["time"] = pd.to_datetime(frame["time"]).dt.tz_localize("Europe/Madrid").astype(str)
    table = validate_frame(frame, spec)
    assert table.times.tz is None
    assert table.times[0] == pd.Timestamp("2018-02-04 23:00:00")


def _problems_in_chunks(data: bytes, spec: FeatureSpec, chunk_rows: int) -> tuple[str, ...]:
    with pytest.raises(DataValidationError) as caught:
        read_traffic_csv(io.BytesIO(data), spec, chunk_rows=chunk_rows)
    return caught.value.problems


@pytest.mark.parametrize(
    "damage",
    [
        {"down": [3, 17, 41, 42], "up": [40]},  # not numeric, across several chunks
        {"time": [12, 13, 60]},  # unparsable times in two chunks
        {"rb_up": [7], "inf": [8, 33]},  # bad cells and infinities
    ],
)
def test_reading_in_chunks_reports_what_one_read_reports(
    frame: pd.DataFrame, spec: FeatureSpec, damage: dict[str, list[int]]
) -> None:
    """A large upload is parsed chunk by chunk to bound its memory; the problems (positions
    across chunk boundaries, first offending value, counts) must be those of one read."""
    broken = frame.iloc[:100].astype(dict.fromkeys(frame.columns, object))
    for column, rows in damage.items():
        for row in rows:
            if column == "inf":
                broken.loc[row, "mcs_up"] = "inf"
            else:
                broken.loc[row, column] = f"bad-{row}"
    data = broken.to_csv(index=False).encode()
    whole = _problems_in_chunks(data, spec, chunk_rows=len(broken) + 1)
    assert whole  # the damage is reported at all
    for chunk_rows in (1, 16, 40):
        assert _problems_in_chunks(data, spec, chunk_rows) == whole


def test_reading_in_chunks_keeps_every_row_and_value(
    frame: pd.DataFrame, spec: FeatureSpec
) -> None:
    data = frame.to_csv(index=False).encode()
    whole = read_traffic_csv(io.BytesIO(data), spec, chunk_rows=len(frame) + 1)
    chunked = read_traffic_csv(io.BytesIO(data), spec, chunk_rows=7)
    pd.testing.assert_frame_equal(chunked.frame, whole.frame)
    assert chunked.frequency == whole.frequency
