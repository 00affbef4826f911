"""The dashboard in a real headless Chromium against the embedded system (tests/ui/conftest.py).

What an operator does: a broken CSV is refused with its problem shown at its CSV line; a slice
of PobleSec is uploaded through the page and its run followed to the leaderboard; the fleet
lists a trained station; the station page draws one point per test window the batch inference
logged; a key without the admin scope is refused promote and rollback and the admin key does
both, recorded under its name; the exploratory view summarises every column. Each test writes
a screenshot of its page to build/ui/ and fails on any console error.

The tests share the system but no results: each one uploads (or asks a fixture to upload) the
station it looks at, so any of them passes alone, in any order. The page upload and the
promotions each have a station of their own: the first must start from nothing, the second
changes its champion, and neither may change the station the other pages check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from flts.data.spec import FeatureSpec
from servers.client import bearer, upload_dataset, wait_http

from .conftest import DATA_DIR, Console, System, screenshot

#: The station the fleet, station and exploratory tests look at (the ``trained`` fixture's).
IDENTIFIER = "PobleSec"
#: The station the upload test drops through the page, and the one whose champion the
#: promotion test switches. Neither name contains "poble", so filtering the fleet by it finds
#: the one row of IDENTIFIER whichever tests ran before.
DROPPED = "Dropped"
SWITCHED = "Switched"
TRAIN_ROWS = 1_500
TEST_ROWS = 400
#: Test windows the batch inference scores: one per test row with a full history before it.
WINDOWS = TEST_ROWS - FeatureSpec().lags - FeatureSpec().horizon + 1
#: Upload to decision for two fast trainers on TRAIN_ROWS rows, with room for a slow machine.
DECISION_SECONDS = 240


def _slice(name: str, rows: int, target: Path) -> Path:
    source = DATA_DIR / name
    assert source.is_file(), f"{source} is missing: the tests read the Barcelona datasets there"
    with source.open() as lines:
        target.write_text("".join(next(lines) for _ in range(rows + 1)))
    return target


def _open(page: Page, system: System, route: str, key: str) -> None:
    """Load the dashboard at ``route`` and give it ``key`` when it asks."""
    page.goto(f"{system.url}/ui/#{route}")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    page.get_by_role("textbox", name="Key", exact=True).fill(key)
    page.get_by_role("button", name="Use this key").click()
    expect(dialog).to_be_hidden()


def _switch_key(page: Page, key: str) -> None:
    page.get_by_role("button", name="API key", exact=True).click()
    page.get_by_role("textbox", name="Key", exact=True).fill(key)
    page.get_by_role("button", name="Use this key").click()
    expect(page.locator("#key-dialog")).to_be_hidden()


def _api(system: System, path: str) -> Any:
    response = httpx.get(f"{system.url}{path}", headers=bearer(system.viewer_key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _assert_labelled(page: Page) -> None:
    """Every form control on the page has an accessible name (a label or an aria-label)."""
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("main input, main select, main button")]
            .filter((c) => !(c.labels && c.labels.length) && !c.getAttribute("aria-label")
                && !c.textContent.trim())
            .map((c) => c.outerHTML)"""
    )
    assert unnamed == []


def _confirm(page: Page, reason: str) -> None:
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    page.get_by_label("Reason (recorded in the history)").fill(reason)
    page.get_by_role("button", name="Confirm").click()
    expect(dialog).to_be_hidden()


def test_a_broken_csv_is_refused_with_its_problem_at_its_line(
    page: Page, system: System, console: Console, tmp_path: Path
) -> None:
    broken = _slice("PobleSec.csv", 50, tmp_path / "broken.csv")
    lines = broken.read_text().splitlines()
    cells = lines[6].split(",")
    cells[1] = "not-a-number"  # the "down" column of CSV line 7 (the header is line 1)
    lines[6] = ",".join(cells)
    broken.write_text("\n".join(lines) + "\n")
    console.refusals.add(422)

    _open(page, system, "/data", system.viewer_key)
    page.get_by_label("Identifier (station)").fill("Broken")
    page.get_by_label("Training CSV").set_input_files(str(broken))
    page.get_by_role("button", name="Upload").click()
    problems = page.locator("#problems")
    expect(problems).to_be_visible()
    row = problems.locator("tbody tr").filter(has_text="not numeric")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(0)).to_have_text("train")
    expect(row.locator("td").nth(1)).to_have_text("7")
    expect(page.locator("#upload-result [role=alert]")).to_contain_text("422")
    _assert_labelled(page)
    screenshot(page, "data-problems")
    assert _api(system, "/v1/datasets?identifier=Broken")["datasets"] == []  # nothing stored
    assert console.errors == []


def test_an_upload_is_followed_to_its_leaderboard(
    page: Page, system: System, console: Console, tmp_path: Path
) -> None:
    train = _slice("PobleSec.csv", TRAIN_ROWS, tmp_path / "PobleSec.csv")
    test = _slice("PobleSec_test.csv", TEST_ROWS, tmp_path / "PobleSec_test.csv")
    _open(page, system, "/data", system.viewer_key)
    page.get_by_label("Identifier (station)").fill(DROPPED)
    # Both files dropped on the drop zone at once: the one named *test* becomes the test file.
    page.locator("#drop").dispatch_event(
        "drop", {"dataTransfer": _data_transfer(page, [train, test])}
    )
    expect(page.locator("#upload-chosen")).to_contain_text("test: PobleSec_test.csv")
    page.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-result [role=status]")).to_contain_text("Accepted", timeout=60_000)
    dataset_id = page.locator("#upload-result a").inner_text()
    expect(page.locator("#progress")).to_have_attribute(
        "data-finished", "true", timeout=DECISION_SECONDS * 1_000
    )
    for model in ("RIDGE", "PERSISTENCE"):
        step = page.locator(f"[data-step=train-{model}]")
        expect(step).to_have_attribute("data-status", "FINISHED")
    board = page.locator("#progress-leaderboard table[aria-label^=Leaderboard]")
    expect(board.locator("tbody tr")).to_have_count(2)
    progress = _api(system, f"/ui/api/datasets/{dataset_id}/progress")
    champion = progress["decision"]["champion"]
    assert champion is not None, progress["decision"]
    expect(page.locator("[data-step=promoted]")).to_contain_text(champion["run_id"])
    promoted = board.locator("tr.promoted")
    expect(promoted).to_have_attribute("data-model", champion["model_type"])
    assert progress["identifier"] == DROPPED
    _assert_labelled(page)
    screenshot(page, "data")
    assert console.errors == []


def _data_transfer(page: Page, files: list[Path]) -> Any:
    """A DataTransfer holding ``files`` (what a drop from the file manager carries)."""
    payload = [{"name": f.name, "text": f.read_text()} for f in files]
    return page.evaluate_handle(
        """(files) => {
            const transfer = new DataTransfer();
            for (const f of files) {
                transfer.items.add(new File([f.text], f.name, {type: "text/csv"}));
            }
            return transfer;
        }""",
        payload,
    )


@dataclass(frozen=True)
class Trained:
    """A station uploaded through the API and decided: what the pages about it should show."""

    dataset_id: str
    champion: dict[str, Any]
    progress: dict[str, Any]  # the dataset's progress once decided (its leaderboard)


def _train(system: System, identifier: str, folder: Path) -> Trained:
    """Upload the PobleSec slice as ``identifier`` and wait for the evaluator's decision (its
    ``done`` state is written after the promotion, so the champion is current on return)."""
    train = _slice("PobleSec.csv", TRAIN_ROWS, folder / "train.csv").read_bytes()
    test = _slice("PobleSec_test.csv", TEST_ROWS, folder / "test.csv").read_bytes()
    response = upload_dataset(
        system.url, train, test, identifier, timeout=60, key=system.viewer_key
    )
    assert response.status_code in (200, 201, 202), response.text
    dataset_id = str(response.json()["dataset_id"])
    path = f"/ui/api/datasets/{dataset_id}/progress"
    progress = wait_http(
        lambda: (p := _api(system, path))["finished"] and p, DECISION_SECONDS, "the decision"
    )
    champion = progress["decision"]["champion"]
    assert champion is not None, progress["decision"]
    return Trained(dataset_id, champion, progress)


@pytest.fixture(scope="module")
def trained(system: System, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """IDENTIFIER trained once for the tests that only read its pages."""
    return _train(system, IDENTIFIER, tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="module")
def switchable(system: System, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """SWITCHED trained for the promotion test alone: it changes this station's champion."""
    return _train(system, SWITCHED, tmp_path_factory.mktemp("switchable"))


def test_the_fleet_lists_the_station_with_its_champion(
    page: Page, system: System, console: Console, trained: Trained
) -> None:
    _open(page, system, "/fleet", system.viewer_key)
    row = page.locator(f"#fleet tbody tr[data-identifier={IDENTIFIER}]")
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text(trained.champion["model_type"])
    fleet = _api(system, "/ui/api/fleet")
    expect(page.locator("#fleet tbody tr")).to_have_count(len(fleet["rows"]))
    # Sorting is the server's; the column headers are buttons, so the keyboard sorts too.
    page.get_by_role("button", name="Identifier").click()
    expect(page.locator("#fleet th[aria-sort=descending]")).to_have_count(1)
    page.get_by_role("button", name="Eval NRMSE").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fleet th[aria-sort=ascending]")).to_contain_text("Eval NRMSE")
    _assert_labelled(page)
    page.get_by_label("Filter").fill("poble")
    expect(page.locator("#fleet tbody tr")).to_have_count(1)
    screenshot(page, "fleet")
    assert console.errors == []


def test_the_station_chart_draws_every_test_window(
    page: Page, system: System, console: Console, trained: Trained
) -> None:
    path = f"/ui/api/stations/{IDENTIFIER}/series?target=down&points=500"
    series = wait_http(
        lambda: (s := _api(system, path))["actuals"]["values"] and s, 120, "batch inference"
    )
    assert series["actuals"]["source"] == "test split"
    assert len(series["actuals"]["values"]) == WINDOWS  # one per window of the stored test rows
    assert len(series["forecast"]["values"]) == WINDOWS
    _open(page, system, f"/station/{IDENTIFIER}", system.viewer_key)
    chart = page.locator("#station-chart")
    expect(chart).to_have_attribute("data-drawn", "true")
    # Plotly draws one marker per actual: count what is on the page, not what was sent.
    expect(chart.locator(".scatterlayer .points path")).to_have_count(WINDOWS)
    drawn = page.evaluate(
        "() => document.getElementById('station-chart').data.map(t => [t.name, t.x.length])"
    )
    assert dict(drawn) == {"actual": WINDOWS, "forecast (step 1)": WINDOWS}
    expect(page.locator("#lineage")).to_contain_text(trained.champion["run_id"])
    expect(page.locator("#lineage")).to_contain_text(trained.dataset_id)
    expect(page.locator("#per-horizon tbody tr")).to_have_count(1)  # horizon 1: step 1
    _assert_labelled(page)
    screenshot(page, "station")
    assert console.errors == []


def test_promote_and_rollback_need_the_admin_scope(
    page: Page, system: System, console: Console, switchable: Trained
) -> None:
    leaderboard = switchable.progress["decision"]["leaderboard"]
    other = next(e for e in leaderboard if not e["promoted"] and e["status"] == "SUCCESS")
    first = switchable.champion["run_id"]
    console.refusals.add(403)
    _open(page, system, f"/decisions?identifier={SWITCHED}", system.viewer_key)
    expect(page.locator(".decision")).to_have_count(1)
    promote = page.get_by_role(
        "button", name=f"Promote {other['model_type']} run {other['run_id']}"
    )
    promote.click()
    _confirm(page, "try the other model")
    refusal = page.locator("#decision-status [role=alert]")
    expect(refusal).to_contain_text("403")
    expect(refusal).to_contain_text("lacks the 'admin' scope")
    screenshot(page, "decisions-refused")

    _switch_key(page, system.admin_key)
    promote.click()
    _confirm(page, "try the other model")
    expect(page.locator("#decision-status [role=status]")).to_contain_text(other["run_id"])
    screenshot(page, "decisions")

    page.goto(f"{system.url}/ui/#/promotions/{SWITCHED}")
    expect(page.locator("#current-champion")).to_contain_text(other["run_id"])
    _switch_key(page, system.viewer_key)
    page.get_by_role("button", name="Roll back").click()
    _confirm(page, "back to the evaluator's choice")
    expect(page.locator("#promotion-status [role=alert]")).to_contain_text("403")
    expect(page.locator("#current-champion")).to_contain_text(other["run_id"])

    _switch_key(page, system.admin_key)
    page.get_by_role("button", name="Roll back").click()
    _confirm(page, "back to the evaluator's choice")
    expect(page.locator("#promotion-status [role=status]")).to_contain_text(first)
    expect(page.locator("#current-champion")).to_contain_text(first)
    history = page.locator("table[aria-label='Promotion history'] tbody tr")
    expect(history).to_have_count(3)  # the evaluator's promotion, the manual one, the rollback
    expect(history.nth(0)).to_contain_text("rollback")
    expect(history.nth(0)).to_contain_text("operator")  # the admin key's name, as the actor
    expect(history.nth(1)).to_contain_text("manual")
    _assert_labelled(page)
    screenshot(page, "promotions")
    # Refused attempts show in the page, not in the console.
    assert console.errors == []


def test_the_exploratory_view_summarises_every_column(
    page: Page, system: System, console: Console, trained: Trained
) -> None:
    _open(page, system, f"/data/{trained.dataset_id}", system.viewer_key)
    spec = FeatureSpec()
    summary = page.locator("table[aria-label='Column summary'] tbody tr")
    expect(summary).to_have_count(len(spec.inputs))
    explored = _api(system, f"/ui/api/datasets/{trained.dataset_id}/explore")
    assert explored["rows"] == TRAIN_ROWS + TEST_ROWS
    down = summary.filter(has=page.locator("td", has_text="down")).first
    expect(down).to_be_visible()
    for chart in ("explore-series", "explore-daily", "explore-weekly", "explore-correlation"):
        expect(page.locator(f"#{chart} .main-svg").first).to_be_visible()
    _assert_labelled(page)
    screenshot(page, "explore")
    assert console.errors == []
