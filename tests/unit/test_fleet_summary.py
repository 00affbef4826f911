"""The fleet overview (``flts status``, ``GET /v1/fleet``): rows equal what the pointers say,
a build costs the same number of store requests whatever the fleet's size, and the overview's
figures are the fleet's."""

from __future__ import annotations

import hashlib
import json
import statistics
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.cli import app
from flts.datasets import dataset_keys
from flts.fleet.routes import Sort, State
from flts.fleet.summary import FLEET_SORTS, FLEET_STATES, FleetSummary
from flts.live.monitor import FIGURES_KEY
from flts.promotion import Promotion, PromotionStore
from flts.promotion.index import (
    INDEX_KEY,
    PARTS_PREFIX,
    IndexPart,
    IndexTop,
    part_key,
    part_of,
)
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from flts.settings import Settings
from flts.storage import ObjectStore
from helpers import CountingStore, GatewayClient

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _seed(store: ObjectStore, champions: int, waiting: int = 0) -> list[str]:
    """``champions`` stations promoted (NRMSE and age varying), ``waiting`` only uploaded."""
    promotions = PromotionStore(store)
    names = []
    for i in range(champions):
        name = f"cell-{i:04d}"
        promotions.record(
            Promotion(
                run_id=f"run-{i}",
                model_type=("RIDGE", "PERSISTENCE", "GLOBAL")[i % 3],
                config_hash=f"{i:016x}",
                identifier=name,
                scores={"nrmse": 0.2 + (i * 37 % 100) / 250},
                promoted_at=T0 - timedelta(hours=i),
            )
        )
        names.append(name)
    for i in range(waiting):
        name = f"new-{i:04d}"
        store.put_json(dataset_keys(f"20260101T000000Z-{i:012x}")["meta"], {"identifier": name})
        names.append(name)
    return names


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(f"file://{tmp_path / 'store'}")


def test_rows_are_what_the_pointers_say(store: ObjectStore) -> None:
    names = _seed(store, 12, waiting=3)
    rows, _ = FleetSummary(store).rows()
    assert [r["identifier"] for r in rows] == sorted(names)
    promotions = PromotionStore(store)
    for row in rows:
        current = promotions.current(row["identifier"])
        if current is None:
            assert (row["run_id"], row["state"]) == (None, "no champion")
            continue
        assert row["run_id"] == current.run_id
        assert row["model_type"] == current.model_type
        assert row["evaluation_nrmse"] == current.scores["nrmse"]
        assert row["promoted_at"] == current.promoted_at.isoformat()


def test_a_build_reads_the_same_whatever_the_fleet_size(store: ObjectStore) -> None:
    counting = CountingStore(store)
    summary = FleetSummary(counting)
    requests = []
    for size in (10, 60):
        _seed(store, size, waiting=size // 5)  # (re)promotes the first ones, adds the rest
        summary.rows()  # a build after new uploads reads each new meta.json once
        counting.reads()
        summary.rows()
        calls = counting.reads()
        reads = [key for method, key in calls if method != "list"]
        # The index and the monitor's figures; never a pointer or a meta.json again.
        assert set(reads) <= {INDEX_KEY, FIGURES_KEY}, reads
        requests.append(len(calls))
    assert requests[0] == requests[1]


def test_an_index_without_summaries_or_none_at_all_gives_the_same_rows(
    store: ObjectStore,
) -> None:
    _seed(store, 9, waiting=2)
    expected, _ = FleetSummary(store).rows()
    for key in store.list(PARTS_PREFIX):  # entries without summaries: each pointer is read
        part = IndexPart.model_validate_json(store.get(key))
        entries = {n: e.model_copy(update={"champion": None}) for n, e in part.entries.items()}
        store.put(key, part.model_copy(update={"entries": entries}).model_dump_json().encode())
    top = IndexTop.model_validate_json(store.get(INDEX_KEY))
    digests = {p: hashlib.sha256(store.get(part_key(p))).hexdigest() for p in top.parts}
    store.put(INDEX_KEY, top.model_copy(update={"parts": digests}).model_dump_json().encode())
    from_pointers, _ = FleetSummary(store).rows()
    assert from_pointers == _without_age(expected, from_pointers)
    store.delete(INDEX_KEY)
    from_listing, _ = FleetSummary(store).rows()
    assert from_listing == _without_age(expected, from_listing)


def test_a_lost_index_part_costs_the_pointers_of_that_part_only(store: ObjectStore) -> None:
    names = _seed(store, 40)
    expected, _ = FleetSummary(store).rows()
    lost = part_of(names[0])
    store.delete(part_key(lost))
    counting = CountingStore(store)
    rows, _ = FleetSummary(counting).rows()
    assert rows == _without_age(expected, rows)
    pointers = {key for method, key in counting.reads() if key.endswith("/current.json")}
    in_lost = {PromotionStore.pointer_key(name) for name in names if part_of(name) == lost}
    assert in_lost
    assert pointers == in_lost


def test_a_lost_index_part_is_listed_once_per_version_and_never_served_stale(
    store: ObjectStore,
) -> None:
    """A build that held a part before a commit in it and its loss serves that commit (its
    copy is stale), and lists the pointers once per hash the top names of the part, not at
    every build."""
    names = _seed(store, 40)
    lost = part_of(names[0])
    other = next(name for name in names if part_of(name) != lost)
    counting = CountingStore(store)
    summary = FleetSummary(counting)
    summary.rows()  # holds every part

    def promote(name: str, run_id: str, hours: int) -> None:
        promotions = PromotionStore(store)
        current = promotions.current(name)
        assert current is not None
        promotions.record(
            current.model_copy(
                update={
                    "run_id": run_id,
                    "previous_run_id": current.run_id,
                    "promoted_at": T0 + timedelta(hours=hours),
                }
            )
        )

    def build() -> tuple[dict[str, str], int]:
        counting.reads()
        rows, _ = summary.rows()
        listings = [k for m, k in counting.reads() if m == "list" and "promotion" in k]
        return {row["identifier"]: row["run_id"] for row in rows}, len(listings)

    promote(names[0], "run-new", 1)  # a commit in the part, then the part is lost
    store.delete(part_key(lost))
    assert build() == ({**_pointer_runs(store, names), names[0]: "run-new"}, 1)
    assert build()[1] == 0  # the pointers read for that version of the part are kept
    promote(other, "run-other", 1)  # another part changes: the lost one's hash does not
    runs, listings = build()
    assert (runs[names[0]], runs[other], listings) == ("run-new", "run-other", 0)
    promote(names[0], "run-newer", 2)  # the part's next writer rebuilds it
    runs, listings = build()
    assert (runs[names[0]], listings) == ("run-newer", 0)
    store.delete(part_key(lost))  # lost again, at that hash, which this build holds: no read
    promote(other, "run-other-2", 2)
    runs, listings = build()
    assert (runs[names[0]], runs[other], listings) == ("run-newer", "run-other-2", 0)


def _pointer_runs(store: ObjectStore, names: list[str]) -> dict[str, str | None]:
    """identifier -> the champion run its pointer names."""
    promotions = PromotionStore(store)
    return {n: (p.run_id if (p := promotions.current(n)) is not None else None) for n in names}


def _without_age(
    expected: list[dict[str, typing.Any]], actual: list[dict[str, typing.Any]]
) -> list[dict[str, typing.Any]]:
    """``expected`` with ``actual``'s ages (they move with the clock between two builds)."""
    return [{**e, "age_seconds": a["age_seconds"]} for e, a in zip(expected, actual, strict=True)]


def test_overview_figures_are_the_fleets(store: ObjectStore) -> None:
    _seed(store, 30, waiting=4)
    page = FleetSummary(store).page(limit=5, sort="evaluation_nrmse", order="desc")
    overview = page["overview"]
    rows, _ = FleetSummary(store).rows()
    scores = [r["evaluation_nrmse"] for r in rows if r["evaluation_nrmse"] is not None]
    assert (overview["stations"], overview["with_champion"]) == (34, 30)
    assert overview["states"] == {"ok": 30, "no champion": 4}
    assert overview["model_types"] == {"RIDGE": 10, "PERSISTENCE": 10, "GLOBAL": 10}
    assert overview["evaluation_nrmse"]["median"] == pytest.approx(statistics.median(scores))
    assert overview["oldest_champion_seconds"] >= timedelta(hours=29).total_seconds()
    shown = [r["evaluation_nrmse"] for r in page["rows"]]
    assert shown == sorted(scores, reverse=True)[:5]


def test_the_http_choices_are_the_summarys() -> None:
    assert typing.get_args(Sort) == FLEET_SORTS
    assert typing.get_args(State) == ("", *FLEET_STATES)


def test_status_pages_the_fleet_and_get_v1_fleet_agrees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    for name in ("FLTS_BUS_URL", "FLTS_STORAGE_URL", "FLTS_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    context = ServiceContext(settings)
    _seed(context.store, 25)
    result = CliRunner().invoke(
        app, ["status", "--sort", "age_seconds", "--order", "desc", "--limit", "4", "-o", "json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    shown = [c["identifier"] for c in document["champions"]]
    assert shown == ["cell-0024", "cell-0023", "cell-0022", "cell-0021"]  # the oldest first
    assert document["fleet"]["overview"]["stations"] == 25
    assert document["fleet"]["matched"] == 25

    client = GatewayClient(create_gateway_app(context))
    answer = client.get("/v1/fleet", params={"sort": "age_seconds", "order": "desc", "limit": 4})
    assert answer.status_code == 200, answer.text
    assert [r["identifier"] for r in answer.json()["rows"]] == shown
    refused = client.get("/v1/fleet", params={"sort": "colour", "limit": 0})
    assert refused.status_code == 422
    assert len(refused.json()["problems"]) == 2

    tables = CliRunner().invoke(app, ["status", "--query", "cell-001", "--limit", "3"])
    assert tables.exit_code == 0, tables.output
    assert "Fleet: 25 stations, 25 with a champion" in tables.output
    assert "Showing 1-3 of 10 matching stations" in tables.output
    bad = CliRunner().invoke(app, ["status", "--sort", "colour"])
    assert bad.exit_code != 0
    context.close()
