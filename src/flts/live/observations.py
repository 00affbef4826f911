"""The observation log: rows a station reports after its first upload, kept append-only.

Layout in the object store, one folder per identifier and UTC day of the rows::

    observations/<identifier>/<yyyy-mm-dd>/part-<written at>-<random>.parquet      one per append
    observations/<identifier>/<yyyy-mm-dd>/compacted-<written at>-<random>.parquet  merged parts

Rules (docs/architecture.md, rule 16):

* **Append-only.** An append writes one new object per day it touches and never rewrites one;
  nothing is read-modify-written. Compaction writes the merged rows of a day as a new object,
  then deletes only the parts it merged: a reader that lists the day at any moment (before,
  during or after) sees every row at least once, and duplicates are dropped on read.
* **Idempotent on (identifier, time).** A row already stored with the same values is counted
  as a duplicate and not stored again; one with other values is a conflict and refuses the
  whole request, naming the times. On read, the first-written value of a time wins
  (``compacted-`` sorts before ``part-``, and parts sort by write time).
* **Late and out-of-order rows** are accepted within ``live.late_window_minutes`` of the
  newest stored row, on the grid of the stored rows (or, for the first rows of a station, of
  the request's own first row).
* **All or nothing.** A request is validated whole before anything is written.

One process serialises the appends of each identifier with a lock; two gateway processes
appending conflicting values for the same new time at the same moment can both succeed, and the
first-written value then wins on read.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from flts.data.reader import quote
from flts.data.spec import FeatureSpec
from flts.exceptions import DataValidationError
from flts.storage import ObjectStore

OBSERVATIONS_ROOT = "observations"
_PART = "part-"
_COMPACTED = "compacted-"
#: Station-days kept in memory per log (a day of 2-minute rows is ~60 KiB).
CACHED_DAYS = 1_024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Appended:
    """What one append did."""

    identifier: str
    accepted: int  # new rows stored
    duplicates: int  # rows already stored with the same values
    first: pd.Timestamp | None  # of the request's rows
    last: pd.Timestamp | None
    newest: pd.Timestamp | None  # the station's newest stored row afterwards
    parts: tuple[str, ...]  # keys written

    def summary(self) -> dict[str, Any]:
        """The JSON answer of the ingest routes."""
        return {
            "identifier": self.identifier,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "first": _iso(self.first),
            "last": _iso(self.last),
            "newest": _iso(self.newest),
        }


@dataclass
class _Day:
    """One station-day as last read: the keys it was built from and their rows."""

    keys: tuple[str, ...]
    frame: pd.DataFrame


class ObservationLog:
    """Append, read and compact the observations of every identifier (see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        spec: FeatureSpec,
        *,
        late_window: timedelta = timedelta(days=1),
        compact_after_parts: int = 32,
    ) -> None:
        self.store = store
        self.spec = spec
        self.late_window = pd.Timedelta(late_window)
        self.compact_after_parts = compact_after_parts
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # station-days as last read, least recently used first: bounded, since a replica
        # reading a station's newest rows would otherwise keep every day it ever read
        self._days: OrderedDict[tuple[str, str], _Day] = OrderedDict()
        self._cache_guard = threading.Lock()
        self._compactor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compact")
        self._compacting: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ appending

    def append(self, identifier: str, rows: pd.DataFrame) -> Appended:
        """Store the rows that are new (validated cells, indexed by naive UTC time, columns
        ``spec.inputs``: what :func:`flts.data.reader.validate_rows` returns). Raises
        :class:`DataValidationError` naming every problem, with nothing stored."""
        rows = _own_duplicates(rows)
        if rows.empty:
            return Appended(identifier, 0, 0, None, None, self.newest(identifier), ())
        with self._lock(identifier):
            days = sorted({t.strftime("%Y-%m-%d") for t in rows.index})
            stored = {day: self._day(identifier, day) for day in days}
            newest = self.newest(identifier)
            self._check_placement(rows, newest, stored)
            new_rows, duplicates = _split_known(rows, pd.concat([d.frame for d in stored.values()]))
            written: list[str] = []
            for day, part in new_rows.groupby(
                pd.DatetimeIndex(new_rows.index).strftime("%Y-%m-%d")
            ):
                key = self._write(identifier, str(day), _PART, part)
                written.append(key)
            if not new_rows.empty:
                newest = max(filter(None, [newest, new_rows.index.max()]))
        for key in written:
            self._maybe_compact(identifier, key.rsplit("/", 2)[1])
        return Appended(
            identifier=identifier,
            accepted=len(new_rows),
            duplicates=duplicates,
            first=rows.index.min(),
            last=rows.index.max(),
            newest=newest,
            parts=tuple(written),
        )

    def _check_placement(
        self, rows: pd.DataFrame, newest: pd.Timestamp | None, stored: dict[str, _Day]
    ) -> None:
        """Grid, late window and conflicts with stored values, all reported together."""
        problems: list[str] = []
        step = self.spec.step.value
        anchor = newest if newest is not None else rows.index.min()
        ticks = pd.DatetimeIndex(rows.index).asi8
        off_grid = np.flatnonzero((ticks - anchor.value) % step != 0)
        if len(off_grid):
            problems.append(
                f"times off the {self.spec.step} grid of the stored rows at "
                f"{_times(rows.index[off_grid])}"
            )
        if newest is not None:
            late = np.flatnonzero(rows.index < newest - self.late_window)
            if len(late):
                problems.append(
                    f"rows older than the late window ({self.late_window}) behind the newest "
                    f"stored row {newest.isoformat()} at {_times(rows.index[late])}"
                )
        known = pd.concat([day.frame for day in stored.values()])
        common = rows.index.intersection(known.index)
        if len(common):
            ours = rows.loc[common].to_numpy()
            theirs = known.loc[common, list(self.spec.inputs)].to_numpy()
            differs = ~((ours == theirs) | (np.isnan(ours) & np.isnan(theirs))).all(axis=1)
            if differs.any():
                problems.append(
                    "rows conflict with the values already stored for the same times at "
                    f"{_times(common[differs])}"
                )
        if problems:
            raise DataValidationError(*problems)

    def _write(self, identifier: str, day: str, kind: str, rows: pd.DataFrame) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"{self._prefix(identifier)}/{day}/{kind}{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        buffer = io.BytesIO()
        rows.to_parquet(buffer)
        self.store.put_atomic(key, buffer.getvalue())
        return key

    # ------------------------------------------------------------------ reading

    def identifiers(self) -> list[str]:
        """Identifiers with at least one stored observation."""
        return sorted({key.split("/")[1] for key in self.store.list(OBSERVATIONS_ROOT)})

    def days(self, identifier: str) -> list[str]:
        """The UTC days (``yyyy-mm-dd``) with rows for ``identifier``, oldest first."""
        keys = self.store.list(self._prefix(identifier))
        return sorted({key.rsplit("/", 2)[1] for key in keys})

    def newest(self, identifier: str) -> pd.Timestamp | None:
        """Time of the newest stored row of ``identifier`` (None before the first)."""
        for day in reversed(self.days(identifier)):
            frame = self._day(identifier, day).frame
            if not frame.empty:
                return pd.Timestamp(frame.index.max())
        return None

    def read(
        self,
        identifier: str,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Stored rows of ``identifier`` with ``start <= time <= end``, sorted by time, one per
        time (the first written), columns ``spec.inputs``."""
        days = [
            day
            for day in self.days(identifier)
            if (start is None or day >= start.strftime("%Y-%m-%d"))
            and (end is None or day <= end.strftime("%Y-%m-%d"))
        ]
        frames = [self._day(identifier, day).frame for day in days]
        frame = pd.concat(frames) if frames else self._empty()
        return frame.loc[(start or frame.index.min()) : (end or frame.index.max())]

    def tail(self, identifier: str, count: int) -> pd.DataFrame:
        """The newest ``count`` stored rows of ``identifier`` (fewer when fewer are stored),
        reading only the newest days."""
        frames: list[pd.DataFrame] = []
        rows = 0
        for day in reversed(self.days(identifier)):
            frame = self._day(identifier, day).frame
            frames.insert(0, frame)
            rows += len(frame)
            if rows >= count:
                break
        return pd.concat(frames).iloc[-count:] if frames else self._empty()

    def _day(self, identifier: str, day: str) -> _Day:
        """The rows of one station-day, reading only objects not read before (a listing is
        one request; compaction's deletions make it read the day afresh)."""
        keys = self._objects(identifier, day)
        slot = (identifier, day)
        with self._cache_guard:
            cached = self._days.get(slot)
            if cached is not None and cached.keys == keys:
                self._days.move_to_end(slot)
                return cached
        for _ in range(5):  # a compaction between listing and reading: list again
            if cached is not None and set(cached.keys) <= set(keys):
                added, complete = self._load([k for k in keys if k not in cached.keys])
                frame = _first_per_time([cached.frame, *added])
            else:
                loaded, complete = self._load(keys)
                frame = _first_per_time(loaded)
            if complete:
                break
            keys, cached = self._objects(identifier, day), None
        fresh = _Day(keys=keys, frame=frame)
        with self._cache_guard:
            self._days[slot] = fresh
            self._days.move_to_end(slot)
            while len(self._days) > CACHED_DAYS:
                self._days.popitem(last=False)
        return fresh

    def _load(self, keys: Iterable[str]) -> tuple[list[pd.DataFrame], bool]:
        """The objects' rows, and whether every one was still there (a part compacted away
        between the listing and the read has its rows in an object the listing missed)."""
        frames = []
        complete = True
        for key in sorted(keys):  # compacted-* first, then parts by write time
            try:
                frames.append(pd.read_parquet(io.BytesIO(self.store.get(key))))
            except KeyError:
                complete = False
        return frames or [self._empty()], complete

    def _empty(self) -> pd.DataFrame:
        index = pd.DatetimeIndex([], name=self.spec.time_column, dtype="datetime64[ns]")
        return pd.DataFrame(
            {c: pd.Series([], dtype=np.float64) for c in self.spec.inputs}, index=index
        )

    # ------------------------------------------------------------------ compaction

    def compact(self, identifier: str, day: str) -> str | None:
        """Merge the objects of one station-day into one ``compacted-`` object and delete the
        merged ones; returns the new key (None when there was nothing to merge)."""
        keys = self._objects(identifier, day)
        if len(keys) < 2:
            return None
        loaded, complete = self._load(keys)
        if not complete:  # another compactor got there first: leave the day to it
            return None
        merged = _first_per_time(loaded)
        key = self._write(identifier, day, _COMPACTED, merged)
        for old in keys:  # only what was merged: parts written meanwhile stay
            self.store.delete(old)
        log.info("observations of %s on %s compacted from %d objects", identifier, day, len(keys))
        return key

    def _maybe_compact(self, identifier: str, day: str) -> None:
        """Hand a day with many parts to the background compactor (once at a time)."""
        cached = self._days.get((identifier, day))
        parts = 0 if cached is None else sum(_PART in k for k in cached.keys)
        if parts + 1 < self.compact_after_parts or (identifier, day) in self._compacting:
            return
        self._compacting.add((identifier, day))

        def run() -> None:
            try:
                self.compact(identifier, day)
            except Exception:  # retried at the next append of that day
                log.exception("compacting the observations of %s on %s failed", identifier, day)
            finally:
                self._compacting.discard((identifier, day))

        self._compactor.submit(run)

    def close(self) -> None:
        """Wait for a running compaction (its work is safe to lose, but not to tear)."""
        self._compactor.shutdown(wait=True)

    # ------------------------------------------------------------------ helpers

    def _objects(self, identifier: str, day: str) -> tuple[str, ...]:
        """The finished objects of one station-day (a file store's writes in progress, named
        ``<key>.tmp-<random>`` until renamed, are not objects yet)."""
        keys = self.store.list(f"{self._prefix(identifier)}/{day}")
        return tuple(key for key in keys if key.endswith(".parquet"))

    @staticmethod
    def _prefix(identifier: str) -> str:
        return f"{OBSERVATIONS_ROOT}/{identifier}"

    def _lock(self, identifier: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(identifier, threading.Lock())


def cell_value(value: Any) -> float | None:
    """A stored cell as JSON: a number, or null for a missing (NaN) cell."""
    number = float(value)
    return None if number != number else number


def _iso(time: pd.Timestamp | None) -> str | None:
    return None if time is None else time.isoformat()


def _times(index: pd.Index) -> str:
    return quote([t.isoformat() for t in index])


def _first_per_time(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frame = pd.concat(frames)
    return frame[~frame.index.duplicated(keep="first")].sort_index()


def _own_duplicates(rows: pd.DataFrame) -> pd.DataFrame:
    """The request's rows once per time; a time given twice with other values is refused."""
    repeated = rows.index.duplicated(keep=False)
    if repeated.any():
        groups = rows[repeated].groupby(level=0)
        clashing = [t for t, g in groups if len(g.drop_duplicates()) > 1]
        if clashing:
            raise DataValidationError(
                f"rows given twice with different values at {_times(pd.DatetimeIndex(clashing))}"
            )
    return rows[~rows.index.duplicated(keep="first")].sort_index()


def _split_known(rows: pd.DataFrame, known: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows whose time is not stored yet, and how many were (checked equal before)."""
    new = ~rows.index.isin(known.index)
    return rows[new], int((~new).sum())
