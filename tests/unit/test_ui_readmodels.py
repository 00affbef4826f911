"""The dashboard's read models over a seeded store: the fleet's paging, sorting, filtering and
retraining state, computed on the server (the page only draws one page of rows), and a
station's series from the live sources (observations and the monitor's ledger steps)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import pytest
from test_live_monitor import SERIES, SPEC, answer

from benchmarks.ui_fleet import seed_fleet
from flts.data.synthetic import synthetic_traffic
from flts.exceptions import DataValidationError, NotFoundError
from flts.fleet.summary import retraining_state
from flts.live.ledger import ForecastLedger
from flts.live.monitor import LiveMonitor
from flts.live.observations import ObservationLog
from flts.promotion import Promotion, PromotionStore
from flts.services.context import ServiceContext
from flts.services.gateway import ingest_dataset
from flts.ui.readmodels import Dashboard

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


def test_a_station_series_is_its_observations_with_the_ledger_forecasts(
    context: ServiceContext,
) -> None:
    """The live source: stored observations, and the champion's served step-1 forecasts with
    their 80% band as the monitor holds them after its pass."""
    rng = np.random.default_rng(5)
    PromotionStore(context.store).record(
        Promotion(run_id="r1", model_type="RIDGE", config_hash="c0ffee00", identifier="S1")
    )
    ObservationLog(context.store, SPEC).append("S1", SERIES.iloc[:100])
    ledger = ForecastLedger(context.store, "replica-a")
    answers = [answer(origin, 1, rng) for origin in range(60, 99)]
    for item in answers:
        ledger.record(orjson.dumps(item))
    assert ledger.flush() is not None
    LiveMonitor(context.store, SPEC).run_once(datetime.now(UTC))

    series = Dashboard(context).series("S1", "down", points=50)
    actuals, forecast = series["actuals"], series["forecast"]
    assert actuals["source"] == "observations"
    assert actuals["values"] == SERIES["down"].iloc[50:100].tolist()  # the newest 50 rows
    assert forecast["source"] == "forecast ledger"
    served = [a["forecast"][0] for a in answers]
    assert forecast["values"] == pytest.approx([r["down"] for r in served])
    assert [pd.Timestamp(t) for t in forecast["times"]] == [pd.Timestamp(r["time"]) for r in served]
    band = forecast["bands"]["80"]
    assert band["lower"] == pytest.approx([a["intervals"]["80"][0]["down"][0] for a in answers])
    assert band["upper"] == pytest.approx([a["intervals"]["80"][0]["down"][1] for a in answers])


def test_a_station_series_refuses_what_it_cannot_show(context: ServiceContext) -> None:
    board = Dashboard(context)
    with pytest.raises(NotFoundError, match="no champion"):
        board.series("Nobody", "down")
    PromotionStore(context.store).record(
        Promotion(run_id="r1", model_type="RIDGE", config_hash="c0ffee00", identifier="S1")
    )
    with pytest.raises(DataValidationError, match="target must be one of"):
        board.series("S1", "password")
    empty = board.series("S1", "down")  # a champion with nothing logged yet: empty, not an error
    assert empty["actuals"]["source"] is None
    assert empty["forecast"]["values"] == []
