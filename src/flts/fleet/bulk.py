"""Bulk uploads: one request (or one ``flts pipeline`` run) carrying many stations.

Two forms, both split into one dataset per station (docs/clients.md, "Bulk upload"):

* **Identifier column.** One training CSV (and optionally one test CSV) with a column naming
  each row's station; the caller names the column. The files are read a block at a
  time and each station's rows are appended to its own temporary file with the column
  dropped, so a file of a thousand stations is never in memory whole. With a test file, every
  station must have rows in both files.
* **Several files.** One training file per station, its identifier the file name's stem
  (``ElBorn.csv`` is station ``ElBorn``), its test file, if any, named ``<stem>_test.csv``.

Every station is then validated on its own with exactly the checks of a single upload
(:func:`flts.services.gateway.validate_dataset`); a station that fails is reported with its
identifier and problems while the others go on. The accepted ones share one new group id:
their files are stored, the group manifest (:mod:`flts.fleet.groups`) naming exactly them is
written, and only then is each recorded in the outbox and announced, so a trainer that sees
any member's ``training-data`` can read the whole group.

Once every accepted station is recorded in the outbox the upload is done: an outage while
announcing them (:class:`AnnouncementPendingError`) leaves the rest to the outbox's reconciler
(:mod:`flts.services.outbox`), so the gateway answers 202 with the group instead of a 503 a
client would retry, which would store the same stations again as a second group.
"""

from __future__ import annotations

import io
import secrets
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO, Any

import pandas as pd

from flts.data.reader import CHUNK_ROWS, csv_rows, quote
from flts.datasets import new_dataset_id
from flts.events import DatasetUploadedEvent
from flts.exceptions import DataValidationError, InfrastructureError
from flts.fleet.groups import GroupManifest, write_group
from flts.services.context import ServiceContext
from flts.services.gateway import (
    Source,
    ValidatedDataset,
    describe_dataset,
    opened_source,
    sanitize_filename,
    store_dataset,
    task_spec,
    validate_dataset,
)
from flts.services.outbox import Outbox

#: Station files kept open at once while a CSV is split (the rest are reopened to append):
#: bounded so a thousand stations never exhaust the process's file descriptors.
OPEN_FILES = 64
#: Bytes of a CSV split at once on the fast path of :func:`split_csv`.
BLOCK_BYTES = 8 << 20
TEST_SUFFIX = "_test"


@dataclass(frozen=True)
class StationUpload:
    """One station of a bulk upload before validation; ``problems`` found while splitting
    (a test file without a training file, a duplicate name) reject it outright."""

    identifier: str
    train: Source | None
    test: Source | None = None
    train_filename: str | None = None
    test_filename: str | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rejected:
    """A station left out of the group, and why."""

    identifier: str
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"identifier": self.identifier, "problems": self.problems}


@dataclass
class BulkResult:
    """What a bulk upload did: its group, the accepted stations (their events and metadata,
    every one stored and in the outbox), the rejected ones, and the dataset ids of accepted
    stations whose announcement has not completed yet (empty unless an outage interrupted
    it: the outbox's reconciler announces them)."""

    group: str
    events: list[DatasetUploadedEvent] = field(default_factory=list)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The gateway's 201 (or, with ``pending`` stations, 202) body."""
        return {
            "group": self.group,
            "accepted": len(self.datasets),
            "datasets": self.datasets,
            "rejected": [r.to_json() for r in self.rejected],
            "pending": self.pending,
        }


class AnnouncementPendingError(InfrastructureError):
    """An outage stopped the announcement of a bulk upload after every accepted station was
    stored, named in the group manifest and recorded in the outbox: nothing is lost (the
    reconciler announces ``result.pending``), so the upload must not be repeated. ``result``
    is the whole upload, its group included."""

    def __init__(self, result: BulkResult, cause: InfrastructureError) -> None:
        super().__init__(
            f"group {result.group} is stored; {len(result.pending)} of its "
            f"{len(result.datasets)} stations will be announced (and listed) once the "
            f"outage is over, without a retry: {cause}",
            retry_after=cause.retry_after,
        )
        self.result = result


def new_group_id() -> str:
    """A fresh group id (UTC time + random hex), valid under the identifier rule."""
    return f"bulk-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


class _Appender:
    """Appends CSV lines to per-station files under ``directory``, the header written when a
    file is created, at most :data:`OPEN_FILES` of them open at a time."""

    def __init__(self, directory: Path, role: str, header: bytes) -> None:
        self.directory = directory
        self.role = role
        self.header = header
        self.paths: dict[str, Path] = {}
        self._open: OrderedDict[str, IO[bytes]] = OrderedDict()

    def append(self, identifier: str, lines: bytes) -> None:
        """Append ``lines`` (whole CSV lines, each ending in a newline) to ``identifier``'s file."""
        handle = self._open.pop(identifier, None)
        if handle is None:
            path = self.paths.get(identifier)
            if path is None:  # numbered, never named after the (unchecked) identifier
                path = self.paths[identifier] = (
                    self.directory / f"{self.role}-{len(self.paths)}.csv"
                )
                handle = path.open("wb")
                handle.write(self.header)
            else:
                handle = path.open("ab")
        handle.write(lines)
        self._open[identifier] = handle
        while len(self._open) > OPEN_FILES:
            self._open.popitem(last=False)[1].close()

    def close(self) -> None:
        for handle in self._open.values():
            handle.close()
        self._open.clear()


def _header(data: IO[bytes], role: str) -> list[str]:
    data.seek(0)
    try:
        header = list(pd.read_csv(data, dtype=str, nrows=0).columns)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{role}: not a CSV file with a header row: {exc}") from exc
    data.seek(0)
    return header


def _identifier(raw: bytes, role: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataValidationError(f"{role}: an identifier is not UTF-8 text: {raw!r}") from exc


def _split_plain(
    data: IO[bytes], columns: int, index: int, appender: _Appender, block_bytes: int
) -> int | None:
    """The fast path of :func:`split_csv`: blocks of whole lines split on commas, each line
    copied as written minus the identifier's field. Returns ``None`` when the file is done,
    or the offset of the first block it cannot split this way (a quote, which may hide a
    comma or a newline in a cell, or a line with another number of fields), from which the
    CSV parser goes on."""
    data.seek(0)
    header = data.readline()
    if b'"' in header:
        return 0
    offset, carry, commas = data.tell(), b"", columns - 1
    while True:
        block = data.read(block_bytes)
        buffer = carry + block
        cut = len(buffer) if not block else buffer.rfind(b"\n") + 1
        lines, carry = buffer[:cut], buffer[cut:]
        if b'"' in lines:
            return offset
        groups: dict[bytes, list[bytes]] = {}
        for line in lines.split(b"\n"):
            line = line.removesuffix(b"\r")
            if not line:
                continue  # a blank line, which the CSV parser skips too
            if line.count(b",") != commas:
                return offset
            fields = line.split(b",", index + 1)  # the fields after it stay one piece
            raw = fields.pop(index)
            groups.setdefault(raw, []).append(b",".join(fields))
        for raw, rows in groups.items():
            appender.append(_identifier(raw, appender.role), b"\n".join(rows) + b"\n")
        offset += len(lines)
        if not block:
            return None


def _beyond(data: IO[bytes], rest: int, beyond: pd.Series, role: str, header: Sequence[str]) -> str:
    """The complaint about the rows of one chunk with a field beyond the header's columns
    (``beyond``, by row position from ``rest``): their lines, counted as one a row, after
    the lines before ``rest`` (the header's alone when the parser read the whole file)."""
    first = 2
    if rest:  # counted only when refusing the file, a block at a time
        data.seek(0)
        first, left = 1, rest
        while left > 0 and (block := data.read(min(left, BLOCK_BYTES))):
            first, left = first + block.count(b"\n"), left - len(block)
    lines = [first + int(position) for position in beyond.index]
    return (
        f"{role}: fields beyond the header's {len(header)} columns on CSV lines "
        f"{quote(lines)}: {beyond.iloc[0]!r} (a line may end in one delimiter, with nothing "
        "after it)"
    )


def split_csv(
    source: Source,
    column: str,
    directory: Path,
    *,
    role: str = "train",
    chunk_rows: int = CHUNK_ROWS,
    block_bytes: int = BLOCK_BYTES,
) -> dict[str, Path]:
    """Split a CSV by the values of ``column`` into one file per value under ``directory``
    (the column dropped, rows in file order, cells as written); return value -> file. Plain
    lines (no quotes) are split ``block_bytes`` at a time as text; from the first block that
    is not plain on, the CSV parser reads ``chunk_rows`` rows at a time. A missing column is
    a :class:`DataValidationError` naming the columns the header has."""
    with opened_source(source) as content:
        data: IO[bytes] = content if not isinstance(content, bytes) else io.BytesIO(content)
        header = _header(data, role)
        if column not in header:
            raise DataValidationError(
                f"{role}: no identifier column {column!r}; the header has {header}"
            )
        kept = [name for name in header if name != column]
        line = pd.DataFrame(columns=kept).to_csv(index=False, lineterminator="\n")
        appender = _Appender(directory, role, line.encode())
        try:
            rest = _split_plain(data, len(header), header.index(column), appender, block_bytes)
            if rest is not None:
                data.seek(rest)
                rows = csv_rows(
                    data,
                    header,
                    chunk_rows,
                    skip_header=rest == 0,  # from the start, the header line comes first
                    keep_default_na=False,
                )
                for chunk, beyond in rows:
                    if len(beyond):
                        raise DataValidationError(_beyond(data, rest, beyond, role, header))
                    for value, part in chunk.groupby(column, sort=False, dropna=False):
                        text = part.drop(columns=column).to_csv(
                            index=False, header=False, lineterminator="\n"
                        )
                        appender.append(str(value), text.encode())
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise DataValidationError(f"{role}: unreadable CSV: {exc}") from exc
        finally:
            appender.close()
    return appender.paths


def split_by_column(
    train: Source,
    test: Source | None,
    column: str,
    directory: Path,
    *,
    train_filename: str | None = None,
    test_filename: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[StationUpload]:
    """Form (a): the stations of one training CSV (and test CSV) keyed by ``column``, in
    order of first appearance; a station in only one of the two files is rejected."""
    trains = split_csv(train, column, directory, role="train", chunk_rows=chunk_rows)
    tests = (
        {}
        if test is None
        else split_csv(test, column, directory, role="test", chunk_rows=chunk_rows)
    )
    if not trains:
        raise DataValidationError(f"train: no rows, so no stations in column {column!r}")
    base = sanitize_filename(train_filename, "train.csv")
    test_base = sanitize_filename(test_filename, "test.csv")
    stations: list[StationUpload] = []
    for identifier, path in trains.items():
        problems: tuple[str, ...] = ()
        if test is not None and identifier not in tests:
            problems = (f"test: no rows for this station in the test file (column {column!r})",)
        stations.append(
            StationUpload(
                identifier=identifier,
                train=path,
                test=tests.get(identifier),
                train_filename=f"{identifier}@{base}",
                test_filename=None if test is None else f"{identifier}@{test_base}",
                problems=problems,
            )
        )
    stations += [
        StationUpload(
            identifier=identifier,
            train=None,
            problems=(
                f"train: no rows for this station, only in the test file (column {column!r})",
            ),
        )
        for identifier in tests
        if identifier not in trains
    ]
    return stations


def _stem(filename: str | None) -> str:
    name = sanitize_filename(filename, "")
    return name[:-4] if name.lower().endswith(".csv") else name


def match_files(
    trains: Sequence[tuple[str | None, Source]], tests: Sequence[tuple[str | None, Source]] = ()
) -> list[StationUpload]:
    """Form (b): one station per training file, named by the file's stem, with the test
    file ``<stem>_test.csv`` when one was given (else the holdout rule). A file without a
    name, two files of one name and a test file matching no training file are rejected."""
    by_stem: dict[str, list[tuple[str | None, Source]]] = {}
    for filename, source in trains:
        by_stem.setdefault(_stem(filename), []).append((filename, source))
    test_by_stem: dict[str, list[tuple[str | None, Source]]] = {}
    for filename, source in tests:
        stem = _stem(filename)
        test_by_stem.setdefault(stem.removesuffix(TEST_SUFFIX), []).append((filename, source))
    stations: list[StationUpload] = []
    for stem, files in by_stem.items():
        matched = test_by_stem.get(stem, [])
        problems = []
        if not stem:
            problems.append("train: a file without a name: a station's identifier is its stem")
        if len(files) > 1:
            problems.append(f"train: {len(files)} training files named {stem}.csv")
        if len(matched) > 1:
            problems.append(f"test: {len(matched)} test files named {stem}{TEST_SUFFIX}.csv")
        (train_name, train_source), test = files[0], matched[0] if matched else None
        stations.append(
            StationUpload(
                identifier=stem,
                train=train_source,
                test=None if test is None else test[1],
                train_filename=train_name,
                test_filename=None if test is None else test[0],
                problems=tuple(problems),
            )
        )
    for stem, files in test_by_stem.items():
        if stem in by_stem:
            continue
        for filename, _ in files:
            name = sanitize_filename(filename, "")
            stations.append(
                StationUpload(
                    identifier=stem,
                    train=None,
                    problems=(
                        f"test: {name!r} matches no training file: test files are named "
                        f"<stem>{TEST_SUFFIX}.csv after their training file <stem>.csv",
                    ),
                )
            )
    return stations


def validate_stations(
    context: ServiceContext,
    stations: Sequence[StationUpload],
    *,
    horizon: int | None = None,
    lags: int | None = None,
) -> tuple[list[ValidatedDataset], list[Rejected]]:
    """Each station through the checks of a single upload, on its own. Raises
    :class:`DataValidationError` for a bad horizon or lags (every station would fail alike),
    for no stations, and when every station is rejected (each problem prefixed with its
    station)."""
    task_spec(context, horizon, lags)
    if not stations:
        raise DataValidationError("the upload has no stations")
    accepted: list[ValidatedDataset] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for station in stations:
        problems = list(station.problems)
        if station.train is not None and not problems:
            try:
                dataset = validate_dataset(
                    context,
                    train=station.train,
                    test=station.test,
                    identifier=station.identifier,
                    train_filename=station.train_filename,
                    test_filename=station.test_filename,
                    horizon=horizon,
                    lags=lags,
                )
            except DataValidationError as exc:
                problems = list(exc.problems)
            else:
                if dataset.identifier in seen:  # the identifier rule is case-sensitive
                    problems = [f"station {dataset.identifier!r} appears twice"]
                else:
                    seen.add(dataset.identifier)
                    accepted.append(dataset)
                    continue
        rejected.append(Rejected(station.identifier, problems))
    if not accepted:
        raise DataValidationError(
            *(f"{r.identifier or '(no identifier)'}: {p}" for r in rejected for p in r.problems)
        )
    return accepted, rejected


def ingest_bulk(
    context: ServiceContext,
    stations: Sequence[StationUpload],
    *,
    horizon: int | None = None,
    lags: int | None = None,
    outbox: Outbox | None = None,
) -> BulkResult:
    """Validate every station, then store the accepted ones, write their group manifest,
    record every one in the outbox and announce them one by one (the order of the module
    docstring). Raises :class:`DataValidationError` when no station is accepted (nothing is
    stored then), :class:`~flts.exceptions.InfrastructureError` when the store cannot be
    reached before every station is recorded, and :class:`AnnouncementPendingError` (with
    the result) when an outage stops the announcements after that: the reconciler announces
    the rest, so the upload is complete and must not be repeated."""
    accepted, rejected = validate_stations(context, stations, horizon=horizon, lags=lags)
    result = BulkResult(group=new_group_id(), rejected=rejected)
    ids = [new_dataset_id() for _ in accepted]
    for dataset, dataset_id in zip(accepted, ids, strict=True):
        store_dataset(context, dataset, dataset_id)
    members = {
        dataset.identifier: dataset_id for dataset, dataset_id in zip(accepted, ids, strict=True)
    }
    write_group(context.store, GroupManifest(group=result.group, members=members))
    outbox = outbox or Outbox(context)
    described = [
        describe_dataset(dataset, dataset_id, group=result.group)
        for dataset, dataset_id in zip(accepted, ids, strict=True)
    ]
    for event, meta in described:  # recorded before any is announced: none is lost
        outbox.record(event, meta)
    result.events = [event for event, _ in described]
    result.datasets = [meta for _, meta in described]
    for position, (event, meta) in enumerate(described):
        try:
            outbox.announce(event, meta)
        except InfrastructureError as exc:
            # The rest is not tried: the outage would fail each in turn, and the reconciler
            # goes through the outbox in order once it is over.
            result.pending = [later["dataset_id"] for _, later in described[position:]]
            raise AnnouncementPendingError(result, exc) from exc
    return result


@contextmanager
def spool() -> Iterator[Path]:
    """A temporary directory for the station files of one split, removed afterwards."""
    with TemporaryDirectory(prefix="flts-bulk-") as directory:
        yield Path(directory)


def ingest_bulk_csv(
    context: ServiceContext,
    *,
    train: Source,
    test: Source | None,
    identifier_column: str,
    train_filename: str | None = None,
    test_filename: str | None = None,
    horizon: int | None = None,
    lags: int | None = None,
    outbox: Outbox | None = None,
) -> BulkResult:
    """Form (a) end to end: split ``train``/``test`` by ``identifier_column`` into spooled
    station files, then :func:`ingest_bulk`. What the gateway, ``flts pipeline`` and a
    benchmark call; a file too big for HTTP goes through here from disk."""
    with spool() as directory:
        stations = split_by_column(
            train,
            test,
            identifier_column,
            directory,
            train_filename=train_filename,
            test_filename=test_filename,
        )
        return ingest_bulk(context, stations, horizon=horizon, lags=lags, outbox=outbox)
