"""The dashboard's fleet read model over a seeded store: paging, sorting, filtering and the
retraining state, computed on the server (the page only draws one page of rows)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from benchmarks.ui_fleet import seed_fleet
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import DataValidationError
from flts.services.context import ServiceContext
from flts.services.gateway import ingest_dataset
from flts.ui.readmodels import Dashboard, retraining_state

COUNT = 45


@pytest.fixture
def seeded(context: ServiceContext) -> tuple[Dashboard, list[str]]:
    names = seed_fleet(context.store, COUNT, now=datetime(2026, 1, 1, tzinfo=UTC))
    return Dashboard(context, cache_seconds=0), names


def test_pages_cover_the_fleet_once_in_order(seeded: tuple[Dashboard, list[str]]) -> None:
    board, names = seeded
    seen: list[str] = []
    offset = 0
    while True:
        page = board.fleet(offset=offset, limit=10)
        assert page["total"] == page["matched"] == COUNT
        if not page["rows"]:
            break
        assert len(page["rows"]) <= 10
        seen.extend(r["identifier"] for r in page["rows"])
        offset += 10
    assert seen == sorted(names)
    descending = board.fleet(limit=COUNT, order="desc")["rows"]
    assert [r["identifier"] for r in descending] == sorted(names, reverse=True)


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sorting_by_a_figure_puts_rows_without_it_last(
    seeded: tuple[Dashboard, list[str]], order: str
) -> None:
    board, _ = seeded
    rows = board.fleet(limit=COUNT, sort="live_nrmse", order=order)["rows"]
    figures = [r["live_nrmse"] for r in rows]
    present = [f for f in figures if f is not None]
    assert 0 < len(present) < COUNT  # the seed gives every second station live figures
    assert figures[: len(present)] == sorted(present, reverse=order == "desc")
    assert figures[len(present) :] == [None] * (COUNT - len(present))


def test_filtering_by_text_and_by_state(seeded: tuple[Dashboard, list[str]]) -> None:
    board, names = seeded
    page = board.fleet(query="STATION-0001", limit=50)
    assert [r["identifier"] for r in page["rows"]] == [n for n in names if "station-0001" in n]
    assert page["total"] == COUNT
    ridge = board.fleet(query="ridge", limit=50)["rows"]
    assert ridge
    assert {r["model_type"] for r in ridge} == {"RIDGE"}
    retraining = board.fleet(state="retraining", limit=50)["rows"]
    # the seed asks for a retraining of every tenth station, and nothing has processed it yet
    assert [r["identifier"] for r in retraining] == names[::10]
    assert all(r["retraining"]["reason"] == "drift" for r in retraining)
    assert board.fleet(state="refused")["rows"] == []


def test_rows_carry_the_champion_and_its_live_figures(seeded: tuple[Dashboard, list[str]]) -> None:
    board, _ = seeded
    rows = {r["identifier"]: r for r in board.fleet(limit=COUNT)["rows"]}
    first = rows["station-00000"]
    assert first["model_type"] == "RIDGE"
    assert first["evaluation_nrmse"] == pytest.approx(0.3)
    assert first["live_nrmse"] == pytest.approx(0.35)
    assert first["live_coverage"] == {"0.8": pytest.approx(0.78)}
    assert first["age_seconds"] > 0
    assert rows["station-00001"]["live_nrmse"] is None


def test_a_station_with_a_dataset_and_no_champion_is_listed(
    seeded: tuple[Dashboard, list[str]], context: ServiceContext
) -> None:
    board, _ = seeded
    frame = synthetic_traffic(600, seed=4)
    ingest_dataset(context, train=frame.to_csv(index=False).encode(), test=None, identifier="New")
    rows = {r["identifier"]: r for r in board.fleet(limit=100)["rows"]}
    assert len(rows) == COUNT + 1
    assert rows["New"]["state"] == "no champion"
    assert rows["New"]["run_id"] is None
    assert board.fleet(state="no champion")["matched"] == 1


def test_the_fleet_is_reused_within_the_cache_time(context: ServiceContext) -> None:
    cached = Dashboard(context, cache_seconds=3600)
    seed_fleet(context.store, 3)
    assert cached.fleet()["total"] == 3
    seed_fleet(context.store, 5)  # two more stations
    assert cached.fleet()["total"] == 3  # the assembled fleet, not a new read
    assert Dashboard(context, cache_seconds=0).fleet()["total"] == 5


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"sort": "password"}, "sort must be one of"),
        ({"order": "up"}, "order must be"),
        ({"state": "broken"}, "state must be one of"),
        ({"limit": 0}, "limit must be between"),
        ({"offset": -1}, "offset must not be negative"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(
    seeded: tuple[Dashboard, list[str]], arguments: dict[str, object], problem: str
) -> None:
    board, _ = seeded
    with pytest.raises(DataValidationError, match=problem):
        board.fleet(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("trigger", "state"),
    [
        (None, "ok"),
        ({"outcome": None, "promoted": None}, "retraining"),
        ({"outcome": {"status": "prepared"}, "promoted": None}, "retraining"),
        ({"outcome": {"status": "prepared"}, "promoted": True}, "retrained"),
        ({"outcome": {"status": "prepared"}, "promoted": False}, "kept"),
        ({"outcome": {"status": "refused"}, "promoted": None}, "refused"),
    ],
)
def test_retraining_state_of_the_newest_trigger(
    trigger: dict[str, object] | None, state: str
) -> None:
    assert retraining_state(trigger) == state
