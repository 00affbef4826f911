"""Bulk uploads split into stations (flts.fleet.bulk): each station is validated alone with a
single upload's checks, bad ones are reported by identifier while the others are stored, and
the group manifest names exactly the accepted stations before any is announced."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from flts.data.synthetic import synthetic_traffic
from flts.datasets import read_dataset_metas
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, Envelope, Event
from flts.exceptions import BusError, DataValidationError
from flts.fleet.bulk import (
    AnnouncementPendingError,
    ingest_bulk,
    ingest_bulk_csv,
    match_files,
    split_by_column,
    split_csv,
)
from flts.fleet.groups import read_group
from flts.services.context import ServiceContext
from flts.services.outbox import Outbox
from helpers import memory_settings


def _station(identifier: str, rows: int = 300, seed: int = 0) -> pd.DataFrame:
    frame = synthetic_traffic(rows, seed=seed)
    frame.insert(1, "station", identifier)
    return frame


def _bulk(*frames: pd.DataFrame) -> bytes:
    return pd.concat(frames).to_csv(index=False).encode()


@pytest.fixture
def context(tmp_path: Path) -> Iterator[ServiceContext]:
    ctx = ServiceContext(memory_settings(tmp_path))
    yield ctx
    ctx.close()


def _announced(context: ServiceContext) -> list[DatasetUploadedEvent]:
    events: list[Event] = []
    context.bus.consume(DATASET_UPLOADED, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return [e for e in events if isinstance(e, DatasetUploadedEvent)]


def test_split_keeps_each_station_rows_in_order_without_the_column(tmp_path: Path) -> None:
    a, b = _station("A", 50, seed=1), _station("B", 40, seed=2)
    interleaved = pd.concat([a.iloc[:20], b.iloc[:25], a.iloc[20:], b.iloc[25:]])
    paths = split_csv(interleaved.to_csv(index=False).encode(), "station", tmp_path, chunk_rows=7)
    assert list(paths) == ["A", "B"]
    for name, frame in (("A", a), ("B", b)):
        got = pd.read_csv(paths[name], dtype=str, keep_default_na=False)
        want = frame.drop(columns="station").astype(str).reset_index(drop=True)
        assert list(got.columns) == list(want.columns)
        assert got["time"].tolist() == want["time"].tolist()
        assert len(got) == len(frame)


def test_missing_identifier_column_names_the_header(tmp_path: Path) -> None:
    data = synthetic_traffic(20).to_csv(index=False).encode()
    with pytest.raises(DataValidationError) as caught:
        split_csv(data, "cell", tmp_path)
    message = caught.value.problems[0]
    assert "'cell'" in message
    assert "'time'" in message
    assert "'down'" in message


def test_mixed_good_and_bad_stations(context: ServiceContext) -> None:
    data = _bulk(
        _station("Good1", seed=1),
        _station("bad name", seed=2),
        _station("Short", 40, seed=3),
        _station("Good2", seed=4),
    )
    result = ingest_bulk_csv(context, train=data, test=None, identifier_column="station")
    assert [m["identifier"] for m in result.datasets] == ["Good1", "Good2"]
    problems = {r.identifier: r.problems for r in result.rejected}
    assert set(problems) == {"bad name", "Short"}
    assert "identifier" in problems["bad name"][0]
    assert any("40 rows" in p for p in problems["Short"])
    manifest = read_group(context.store, result.group)
    assert manifest is not None
    assert manifest.members == {m["identifier"]: m["dataset_id"] for m in result.datasets}
    events = _announced(context)
    assert sorted(e.identifier for e in events) == ["Good1", "Good2"]
    assert {e.payload.group for e in events} == {result.group}
    stored = read_dataset_metas(context.store)
    assert {m["group"] for m in stored} == {result.group}
    # each station's stored CSV is its own rows, without the identifier column
    one = pd.read_csv(io.BytesIO(context.store.get(stored[0]["train"]["key"])))
    assert "station" not in one.columns
    assert len(one) == 300


def test_bad_rows_reject_only_their_station(context: ServiceContext) -> None:
    bad = _station("Broken", seed=5)
    bad["down"] = bad["down"].astype(object)
    bad.loc[bad.index[7], "down"] = "lots"
    result = ingest_bulk_csv(
        context, train=_bulk(_station("Fine", seed=6), bad), test=None, identifier_column="station"
    )
    assert [m["identifier"] for m in result.datasets] == ["Fine"]
    assert result.rejected[0].identifier == "Broken"
    assert any("down" in p for p in result.rejected[0].problems)


def test_all_rejected_lists_every_station_and_stores_nothing(context: ServiceContext) -> None:
    data = _bulk(_station("ShortA", 30, seed=1), _station("ShortB", 30, seed=2))
    with pytest.raises(DataValidationError) as caught:
        ingest_bulk_csv(context, train=data, test=None, identifier_column="station")
    joined = "\n".join(caught.value.problems)
    assert "ShortA:" in joined
    assert "ShortB:" in joined
    assert list(context.store.list("groups")) == list(context.store.list("datasets")) == []
    assert _announced(context) == []


def test_test_file_split_by_the_same_column(tmp_path: Path, context: ServiceContext) -> None:
    train = _bulk(_station("A", seed=1), _station("B", seed=2))
    test_a = _station("A", 60, seed=3)
    test_a["time"] = pd.date_range("2018-02-06 00:00", periods=60, freq="2min").astype(str)
    stations = split_by_column(train, test_a.to_csv(index=False).encode(), "station", tmp_path)
    by_name = {s.identifier: s for s in stations}
    assert by_name["A"].test is not None
    assert not by_name["A"].problems
    assert by_name["B"].problems
    assert "test" in by_name["B"].problems[0]


def test_several_files_matched_by_stem(tmp_path: Path, context: ServiceContext) -> None:
    born = synthetic_traffic(300, seed=1).to_csv(index=False).encode()
    test = synthetic_traffic(300, seed=2).iloc[250:].to_csv(index=False).encode()
    corts = synthetic_traffic(300, seed=3).to_csv(index=False).encode()
    stations = match_files(
        [("ElBorn.csv", born), ("LesCorts.csv", corts)],
        [("ElBorn_test.csv", test), ("Nowhere_test.csv", test)],
    )
    by_name = {s.identifier: s for s in stations}
    assert by_name["ElBorn"].test == test
    assert by_name["ElBorn"].test_filename == "ElBorn_test.csv"
    assert by_name["LesCorts"].test is None
    assert by_name["Nowhere"].train is None
    assert "matches no training file" in by_name["Nowhere"].problems[0]
    result = ingest_bulk(context, stations)
    metas = {m["identifier"]: m for m in result.datasets}
    assert set(metas) == {"ElBorn", "LesCorts"}
    assert metas["ElBorn"]["test_split"] == "uploaded"
    assert metas["LesCorts"]["test_split"].startswith("holdout")
    assert [r.identifier for r in result.rejected] == ["Nowhere"]


def test_duplicate_file_names_are_rejected() -> None:
    data = synthetic_traffic(300).to_csv(index=False).encode()
    stations = match_files([("A.csv", data), ("dir/A.csv", data)])
    assert len(stations) == 1
    assert "2 training files" in stations[0].problems[0]


def test_manifest_is_written_before_any_announcement(context: ServiceContext) -> None:
    seen: list[bool] = []
    publish = context.bus.publish

    def spy(topic: str, event: Envelope) -> None:
        if isinstance(event, DatasetUploadedEvent):
            seen.append(read_group(context.store, str(event.payload.group)) is not None)
        publish(topic, event)

    context.bus.publish = spy  # type: ignore[method-assign,assignment]
    data = _bulk(_station("A", seed=1), _station("B", seed=2))
    ingest_bulk_csv(context, train=data, test=None, identifier_column="station")
    assert seen == [True, True]


@pytest.mark.parametrize("block_bytes", [64, 1 << 20])
def test_plain_and_quoted_lines_split_alike(tmp_path: Path, block_bytes: int) -> None:
    a, b = _station("A", 30, seed=1), _station("B", 30, seed=2)
    frame = pd.concat([a.iloc[:10], b, a.iloc[10:]])
    plain = frame.to_csv(index=False).encode()
    quoted = frame.to_csv(index=False, quoting=1).encode()  # every cell in quotes
    fields = plain.splitlines()[-1].split(b",")
    late = plain + b",".join([fields[0], b'"A"', *fields[2:]]) + b"\n"
    results = []
    for n, data in enumerate((plain, quoted, late)):
        out = tmp_path / str(n)
        out.mkdir()
        paths = split_csv(data, "station", out, block_bytes=block_bytes, chunk_rows=8)
        results.append({k: pd.read_csv(v, dtype=str) for k, v in paths.items()})
    for got in results[:2]:
        assert list(got) == ["A", "B"]
        pd.testing.assert_frame_equal(got["A"], results[0]["A"])
        assert len(got["A"]) == 30
        assert "station" not in got["A"].columns
    assert len(results[2]["A"]) == 31  # the quoted last line, read by the CSV parser


@pytest.mark.parametrize("position", [0, -1])
def test_identifier_column_first_or_last(tmp_path: Path, position: int) -> None:
    frame = synthetic_traffic(20, seed=4)
    frame.insert(position % (len(frame.columns) + 1), "station", ["X", "Y"] * 10)
    paths = split_csv(frame.to_csv(index=False).encode(), "station", tmp_path, block_bytes=100)
    got = pd.read_csv(paths["Y"])
    assert list(got.columns) == list(synthetic_traffic(1).columns)
    assert got["time"].tolist() == frame["time"].astype(str).iloc[1::2].tolist()


def test_a_bus_outage_mid_group_leaves_the_rest_to_the_reconciler(
    context: ServiceContext,
) -> None:
    publish = context.bus.publish
    calls: list[str] = []

    def flaky(topic: str, event: Envelope) -> None:
        calls.append(event.identifier)
        if len(calls) == 2:
            raise BusError("event bus unavailable: connection refused")
        publish(topic, event)

    context.bus.publish = flaky  # type: ignore[method-assign,assignment]
    data = _bulk(_station("A", seed=1), _station("B", seed=2), _station("C", seed=3))
    with pytest.raises(AnnouncementPendingError) as caught:
        ingest_bulk_csv(context, train=data, test=None, identifier_column="station")
    assert isinstance(caught.value.__cause__, BusError)
    result = caught.value.result  # the whole upload: nothing to retry
    assert [m["identifier"] for m in result.datasets] == ["A", "B", "C"]
    outbox = Outbox(context)
    # B failed, C not tried: both recorded, neither lost, both named as pending
    assert sorted(outbox.pending()) == sorted(result.pending)
    assert result.pending == [m["dataset_id"] for m in result.datasets[1:]]
    assert result.group in str(caught.value)
    context.bus.publish = publish  # type: ignore[method-assign]
    assert len(outbox.reconcile()) == 2
    events = _announced(context)
    assert sorted(e.identifier for e in events) == ["A", "B", "C"]
    assert {e.payload.group for e in events} == {result.group}
    manifest = read_group(context.store, result.group)
    assert manifest is not None
    assert sorted(manifest.members) == ["A", "B", "C"]


@pytest.mark.parametrize("quoted_header", [False, True])
def test_rows_with_a_trailing_delimiter_keep_their_columns(
    tmp_path: Path, quoted_header: bool
) -> None:
    """Each data line ends in a comma (one field more than the header): the CSV parser must
    drop the empty field, not read the first column as an index and shift the others."""
    a, b = _station("A", 12, seed=1), _station("B", 12, seed=2)
    frame = pd.concat([a.iloc[:6], b, a.iloc[6:]])
    header, *lines = frame.to_csv(index=False).encode().splitlines()
    if quoted_header:  # a quote in the header sends the whole file to the parser
        header = b",".join(b'"' + name + b'"' for name in header.split(b","))
    data = b"\n".join([header, *(line + b"," for line in lines)]) + b"\n"
    paths = split_csv(data, "station", tmp_path, chunk_rows=5)
    assert list(paths) == ["A", "B"]
    for name, want in (("A", a), ("B", b)):
        got = pd.read_csv(paths[name], dtype=str)
        assert list(got.columns) == list(synthetic_traffic(1).columns)
        assert got["time"].tolist() == want["time"].astype(str).tolist()
        assert got["down"].tolist() == want["down"].astype(str).tolist()


@pytest.mark.parametrize("quoted_header", [False, True])
def test_rows_with_a_field_beyond_the_header_are_refused(
    tmp_path: Path, quoted_header: bool
) -> None:
    """A non-empty field after the header's last column is data the header does not name
    (here an unquoted thousands separator, ``1,000``, and a stray value): the file is
    refused with the CSV lines named, not split with the field silently dropped. Plain
    blocks first (the parser takes over mid-file) or the whole file parsed."""
    frame = _station("A", 12, seed=1)
    header, *lines = frame.to_csv(index=False).encode().splitlines()
    if quoted_header:
        header = b",".join(b'"' + name + b'"' for name in header.split(b","))
    lines[6] += b",EXTRA"  # line 8 of the file (the header is line 1)
    lines[9] += b",000"  # line 11
    data = b"\n".join([header, *lines]) + b"\n"
    with pytest.raises(DataValidationError) as caught:
        split_csv(data, "station", tmp_path, block_bytes=200)
    message = str(caught.value)
    assert "fields beyond the header's" in message
    assert "lines 8, 11" in message
    assert "'EXTRA'" in message


@pytest.mark.parametrize("row", [0, 7])
def test_two_fields_beyond_the_header_are_refused(tmp_path: Path, row: int) -> None:
    """Two fields more than the header (not a trailing delimiter): the parser would drop
    data, so the file is refused, whether the first row it reads has them or a later one."""
    frame = _station("A", 12, seed=1)
    header, *lines = frame.to_csv(index=False).encode().splitlines()
    header = b'"' + header.replace(b",", b'","') + b'"'  # the whole file to the parser
    lines[row] += b",5,6"
    data = b"\n".join([header, *lines]) + b"\n"
    with pytest.raises(DataValidationError, match="unreadable CSV"):
        split_csv(data, "station", tmp_path)
