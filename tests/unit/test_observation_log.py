"""The observation log's rules on an in-memory store (the same rules on the file store and a
real S3 server are in tests/contract/test_observation_log.py): append-only parts, idempotent
re-sends, conflicts and placement refused whole, compaction that loses nothing."""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from flts.data import FeatureSpec
from flts.data.reader import validate_rows
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import DataValidationError
from flts.live.observations import OBSERVATIONS_ROOT, ObservationLog
from flts.storage import ObjectStore

SPEC = FeatureSpec()


#: One synthetic station: 2018-02-05 00:00 onwards, every 2 minutes.
SERIES = validate_rows(synthetic_traffic(1_000, seed=4), SPEC)


def rows(start: int, count: int) -> pd.DataFrame:
    """A copy of ``count`` rows of :data:`SERIES` from row ``start``."""
    return SERIES.iloc[start : start + count].copy()


def bumped(frame: pd.DataFrame, row: int, amount: float) -> pd.DataFrame:
    """``frame`` with its first column's value at position ``row`` changed by ``amount``."""
    values = frame.to_numpy(copy=True)
    values[row, 0] += amount
    return pd.DataFrame(values, index=frame.index, columns=frame.columns)


def new_log(store: ObjectStore | None = None, **options: object) -> ObservationLog:
    return ObservationLog(store or ObjectStore(f"memory://{uuid.uuid4().hex}"), SPEC, **options)  # type: ignore[arg-type]


def objects(log: ObservationLog) -> list[str]:
    return list(log.store.list(OBSERVATIONS_ROOT))


def test_appended_rows_read_back_exactly() -> None:
    log = new_log()
    batch = rows(0, 30)
    done = log.append("A", batch)
    assert (done.accepted, done.duplicates) == (30, 0)
    assert done.newest == batch.index[-1]
    pd.testing.assert_frame_equal(log.read("A"), batch, check_freq=False)
    assert log.identifiers() == ["A"]
    assert log.read("B").empty


def test_a_resent_row_is_counted_once_and_writes_nothing() -> None:
    log = new_log()
    log.append("A", rows(0, 10))
    before = objects(log)
    again = log.append("A", rows(5, 10))  # 5 known rows and 5 new ones
    assert (again.accepted, again.duplicates) == (5, 5)
    assert len(objects(log)) == len(before) + 1
    assert log.append("A", rows(0, 15)).accepted == 0
    assert len(objects(log)) == len(before) + 1  # an all-duplicate request writes nothing
    assert len(log.read("A")) == 15


def test_a_conflicting_resend_is_refused_whole_naming_the_time() -> None:
    log = new_log()
    log.append("A", rows(0, 10))
    changed = bumped(rows(8, 4), 1, 1.0)  # 2 known times (one changed) and 2 new ones
    before = objects(log)
    with pytest.raises(DataValidationError, match="conflict") as caught:
        log.append("A", changed)
    assert changed.index[1].isoformat() in str(caught.value)
    assert objects(log) == before
    assert len(log.read("A")) == 10


def test_missing_cells_are_equal_to_missing_cells() -> None:
    log = new_log()
    values = rows(0, 5).to_numpy(copy=True)
    values[2, 3] = np.nan
    batch = pd.DataFrame(values, index=rows(0, 5).index, columns=SERIES.columns)
    log.append("A", batch)
    assert log.append("A", batch.copy()).duplicates == 5


def test_late_and_out_of_order_rows_within_the_window_are_accepted() -> None:
    log = new_log(late_window=timedelta(hours=1))
    full = rows(0, 70)
    log.append("A", full.iloc[60:])  # newest row 02:18
    shuffled = full.iloc[40:60].sample(frac=1.0, random_state=1)  # 01:20 to 01:58, shuffled
    assert log.append("A", shuffled).accepted == 20
    stored = log.read("A")
    assert stored.index.is_monotonic_increasing
    pd.testing.assert_frame_equal(stored, full.iloc[40:], check_freq=False)


def test_rows_past_the_late_window_or_off_the_grid_are_refused() -> None:
    log = new_log(late_window=timedelta(hours=1))
    full = rows(0, 100)
    log.append("A", full.iloc[50:])
    before = objects(log)
    with pytest.raises(DataValidationError, match="late window") as late:
        log.append("A", full.iloc[10:40])  # newest 03:18; 00:20 to 01:18 are over an hour behind
    assert full.index[10].isoformat() in str(late.value)
    shifted = full.iloc[50:52].copy()
    shifted.index = pd.DatetimeIndex(shifted.index) + pd.Timedelta(seconds=30, hours=4)
    with pytest.raises(DataValidationError, match="off the 0 days 00:02:00 grid"):
        log.append("A", shifted)
    assert objects(log) == before


def test_a_time_twice_in_one_request() -> None:
    log = new_log()
    batch = rows(0, 4)
    twice = pd.concat([batch, batch.iloc[[1]]])
    assert log.append("A", twice).accepted == 4
    clash = bumped(batch.iloc[[2]], 0, 5.0)
    with pytest.raises(DataValidationError, match="given twice"):
        log.append("B", pd.concat([batch, clash]))
    assert log.read("B").empty


def test_rows_across_midnight_land_in_one_part_per_day() -> None:
    log = new_log()
    batch = rows(700, 40)  # 2018-02-05 23:20 to 2018-02-06 00:38
    done = log.append("A", batch)
    assert [key.rsplit("/", 2)[1] for key in done.parts] == ["2018-02-05", "2018-02-06"]
    assert log.days("A") == ["2018-02-05", "2018-02-06"]
    assert len(log.read("A", start=pd.Timestamp("2018-02-06"))) == 20


def test_compaction_merges_a_day_into_one_object_and_keeps_every_row() -> None:
    log = new_log(compact_after_parts=4)
    full = rows(0, 12)
    for i in range(12):
        log.append("A", full.iloc[[i]])
    log.close()  # waits for the background compactions
    kinds = [key.rsplit("/", 1)[1].split("-")[0] for key in objects(log)]
    assert "compacted" in kinds
    assert len(kinds) < 12  # merged: parts written while a compaction ran may remain
    fresh = new_log(log.store)  # a reader with an empty cache
    pd.testing.assert_frame_equal(fresh.read("A"), full, check_freq=False)
    assert fresh.append("A", full).duplicates == 12


def test_a_compaction_cut_short_leaves_duplicates_that_reads_drop() -> None:
    """Crash between writing the merged object and deleting the parts it merged."""
    log = new_log()
    full = rows(0, 6)
    log.append("A", full.iloc[:3])
    log.append("A", full.iloc[3:])
    merged = pd.concat([log.read("A")])
    log._write("A", "2018-02-05", "compacted-", merged)  # the parts are not deleted
    fresh = new_log(log.store)
    pd.testing.assert_frame_equal(fresh.read("A"), full, check_freq=False)
    assert fresh.compact("A", "2018-02-05") is not None
    assert len(objects(fresh)) == 1
    pd.testing.assert_frame_equal(new_log(log.store).read("A"), full, check_freq=False)
