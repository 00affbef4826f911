"""What ``flts pipeline`` prints and writes from a decision: the per-horizon leaderboard."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console

from flts.cli.pipeline import horizon_table
from flts.pipeline import PipelineResult
from flts.promotion import Decision, LeaderboardEntry
from flts.promotion.decisions import HorizonFigures


def _result(steps: tuple[int, ...]) -> PipelineResult:
    """A result whose decision went through JSON, as the pipeline reads it from the store."""
    ridge = LeaderboardEntry(
        model_type="RIDGE",
        run_id="r1",
        status="SUCCESS",
        nrmse=0.5,
        coverage={"80": 0.812, "95": 0.947},
        horizon={s: HorizonFigures(nrmse=0.1 * s, coverage={"80": 0.8}) for s in steps},
        promoted=True,
    )
    failed = LeaderboardEntry(model_type="GRU", status="FAILED", reason="training failed")
    decision = Decision(
        identifier="global",
        config_hash="ab" * 8,
        state="done",
        decided_at=datetime.now(UTC),
        interval_levels=[80.0, 95.0],
        baseline={"nrmse": 0.9},
        baseline_horizon={s: HorizonFigures(nrmse=0.2 * s) for s in steps},
        leaderboard=[ridge, failed],
    )
    document = json.loads(decision.model_dump_json())
    return PipelineResult(
        seconds=1.0,
        config_hash=decision.config_hash,
        identifier="global",
        decision=document,
        leaderboard=document["leaderboard"],
    )


def _text(table: object) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_per_horizon_table_has_nrmse_per_summary_step_and_coverage_per_level() -> None:
    result = _result((1, 5, 15))
    table = horizon_table(result.to_json())
    assert table is not None
    text = _text(table)
    for header in ("NRMSE @1", "NRMSE @5", "NRMSE @15", "cov 80%", "cov 95%"):
        assert header in text
    [ridge] = [line for line in text.splitlines() if "RIDGE" in line]
    cells = [cell.strip() for cell in ridge.split("│")][1:-1]
    assert cells == ["RIDGE", "0.1000", "0.5000", "1.5000", "81.2%", "94.7%"]
    [baseline] = [line for line in text.splitlines() if "persistence" in line]
    assert "3.0000" in baseline  # 0.2 * 15
    assert "GRU" not in text  # only scored candidates have figures


def test_one_step_task_has_no_per_horizon_table() -> None:
    assert horizon_table(_result((1,)).to_json()) is None


def test_json_output_carries_the_figures() -> None:
    document = _result((1, 5)).to_json()
    assert document["interval_levels"] == [80.0, 95.0]
    assert set(document["baseline_horizon"]) == {"1", "5"}
    ridge = document["leaderboard"][0]
    assert ridge["horizon"]["5"]["nrmse"] == 0.5
    assert ridge["coverage"] == {"80": 0.812, "95": 0.947}
