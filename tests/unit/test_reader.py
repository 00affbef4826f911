"""The data contract: valid tables pass, every broken rule is named in one line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flts.data import FeatureSpec, read_traffic_csv, validate_frame
from flts.data.reader import csv_rows
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


def _with_line_ends(frame: pd.DataFrame, ends: dict[int, str]) -> bytes:
    """The CSV of ``frame`` with ``ends[row]`` (default a bare comma) after each data line."""
    header, *lines = frame.to_csv(index=False).splitlines()
    return "\n".join(
        [header, *(f"{line},{ends.get(row, '')}" for row, line in enumerate(lines))]
    ).encode()


@pytest.mark.parametrize("chunk_rows", [7, 10_000])
def test_a_trailing_delimiter_on_each_line_keeps_the_columns(
    frame: pd.DataFrame, spec: FeatureSpec, chunk_rows: int
) -> None:
    """Every line ends in a comma (one empty field more than the header): the columns are
    read by their header position, not shifted by the first one taken as an index."""
    expected = read_traffic_csv(_csv(frame), spec)
    got = read_traffic_csv(io.BytesIO(_with_line_ends(frame, {})), spec, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(got.frame, expected.frame)


@pytest.mark.parametrize("chunk_rows", [7, 10_000])
def test_a_field_beyond_the_header_is_refused_naming_its_lines(
    frame: pd.DataFrame, spec: FeatureSpec, chunk_rows: int
) -> None:
    """A non-empty field after the header's last column is data no column names (an
    unquoted ``1,000`` here): refused with the CSV lines, over every chunk, not dropped."""
    data = _with_line_ends(frame, {3: "EXTRA", 20: "000"})
    with pytest.raises(DataValidationError) as caught:
        read_traffic_csv(io.BytesIO(data), spec, chunk_rows=chunk_rows)
    (problem,) = caught.value.problems
    # Rows 3 and 20 are CSV lines 5 and 22: the header is line 1.
    assert "beyond the header's" in problem
    assert "lines 5, 22: 'EXTRA'" in problem


def test_two_fields_beyond_the_header_are_refused(frame: pd.DataFrame, spec: FeatureSpec) -> None:
    """Two fields more than the header would be dropped by the parser: refused."""
    for row in (0, 9):
        data = _with_line_ends(frame, {row: "1,2"})
        with pytest.raises(DataValidationError, match="not a readable CSV"):
            read_traffic_csv(io.BytesIO(data), spec)


def test_a_csv_from_a_path_or_a_stream_that_cannot_seek(
    tmp_path: Path, frame: pd.DataFrame, spec: FeatureSpec
) -> None:
    """The header is read before the rows: a path is opened twice, a stream that cannot
    seek is read back from memory; both give the rows of a seekable stream."""
    data = _with_line_ends(frame, {})
    expected = read_traffic_csv(io.BytesIO(data), spec).frame
    (tmp_path / "data.csv").write_bytes(data)
    pd.testing.assert_frame_equal(read_traffic_csv(tmp_path / "data.csv", spec).frame, expected)
    stream = _Unseekable(data)
    pd.testing.assert_frame_equal(read_traffic_csv(stream, spec).frame, expected)


class _Unseekable(io.BytesIO):
    """A stream read once, front to back (a socket, a pipe)."""

    def seekable(self) -> bool:
        return False

    def seek(self, offset: int, whence: int = 0) -> int:
        raise io.UnsupportedOperation("seek")

    def tell(self) -> int:
        raise io.UnsupportedOperation("tell")


def test_concurrent_reads_leave_the_warning_filters_as_they_were() -> None:
    """Each chunk is parsed with pandas' parser warning as an error, a process-wide filter:
    uploads read in parallel threads must not leave it installed for everything else."""
    import threading
    import warnings

    before = list(warnings.filters)
    text = "time,down\n" + "".join(f"2024-01-01 00:{m:02d}:00,{m}\n" for m in range(60))

    def read() -> None:
        for _ in range(200):
            for _chunk, _beyond in csv_rows(
                io.StringIO(text), ["time", "down"], 7, skip_header=True
            ):
                pass

    threads = [threading.Thread(target=read) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before
