"""``flts pipeline``: run one upload (or every station of a bulk upload) through every
service to a promoted champion."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flts.cli._choices import DEFAULT_MODELS, ModelsOption, model_list
from flts.cli._common import (
    JsonFileOption,
    OutputFormat,
    OutputOption,
    console,
    emit,
    err_console,
    load_settings,
    print_error,
    user_errors,
    write_json,
)
from flts.cli._progress import epoch_bars, progress_bar, show_progress

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table

    from flts.pipeline import BulkPipelineResult, PipelineResult, StageUpdate
    from flts.settings import Settings

app = typer.Typer()


@app.command("pipeline")
def pipeline(
    train: Annotated[
        list[Path],
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Training CSV; repeat it for a bulk upload of one file per station (each "
            "named by its file name's stem).",
        ),
    ],
    test: Annotated[
        list[Path] | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Held-out test CSV (required for one station); in a bulk upload optional, "
            "and <stem>_test.csv belongs to <stem>.csv.",
        ),
    ] = None,
    identifier: Annotated[str, typer.Option(help="Station or tenant name.")] = "global",
    identifier_column: Annotated[
        str | None,
        typer.Option(
            help="Bulk upload: the column of TRAIN (and TEST) naming each row's station; "
            "every accepted station runs through the pipeline."
        ),
    ] = None,
    models: ModelsOption = DEFAULT_MODELS,
    json_file: JsonFileOption = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 1800.0,
    horizon: Annotated[
        int | None, typer.Option(min=1, help="Steps ahead to forecast (default: feature spec).")
    ] = None,
    lags: Annotated[
        int | None, typer.Option(min=1, help="Input rows per window (default: feature spec).")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Upload TRAIN/TEST, train every model type in parallel, evaluate, promote; print the
    leaderboard. With --identifier-column or several --train files, every station of the
    bulk upload runs and a table per station is printed. Exits with status 1, saying why,
    when nothing was promoted."""
    tests = test or []
    if identifier_column is not None or len(train) > 1:
        _bulk(
            train,
            tests,
            identifier_column,
            identifier,
            model_list(models),
            json_file,
            timeout,
            horizon,
            lags,
            output,
        )
        return
    with user_errors():
        if len(tests) != 1:
            raise typer.BadParameter(
                "give one --test CSV for one station (or use --identifier-column)"
            )
        settings = load_settings()
        kwargs: dict[str, Any] = {
            "train_csv": train[0],
            "test_csv": tests[0],
            "identifier": identifier,
            "models": model_list(models),
            "timeout": timeout,
            "horizon": horizon,
            "lags": lags,
        }
        result = _run(settings, kwargs, show_progress(output))
    emit(output, result.to_json(), lambda: _print_result(result))
    if json_file is not None:
        write_json(json_file, result.to_json())
    if result.champion is None:
        print_error(f"nothing was promoted for {result.identifier}: {result.reason}")
        raise typer.Exit(code=1)


def _bulk(
    train: list[Path],
    tests: list[Path],
    identifier_column: str | None,
    identifier: str,
    models: list[str],
    json_file: Path | None,
    timeout: float,
    horizon: int | None,
    lags: int | None,
    output: OutputFormat,
) -> None:
    """``flts pipeline`` for a bulk upload: a bar over the stations' decisions, a table of
    every station, the rejected ones, and exit 1 when no station got a champion."""
    with user_errors():
        if identifier != "global":
            raise typer.BadParameter(
                "--identifier names one station; a bulk upload takes each station's from "
                "--identifier-column or its file name"
            )
        settings = load_settings()
        kwargs: dict[str, Any] = {
            "train_csv": train,
            "test_csv": tests or None,
            "identifier_column": identifier_column,
            "models": models,
            "timeout": timeout,
            "horizon": horizon,
            "lags": lags,
        }
        result = _run_bulk(settings, kwargs, show_progress(output))
    document = result.to_json()
    emit(output, document, lambda: _print_bulk(result))
    if json_file is not None:
        write_json(json_file, document)
    if result.promoted == 0:
        print_error(f"nothing was promoted for any of the {len(result.stations)} stations")
        raise typer.Exit(code=1)


def _run_bulk(settings: Settings, kwargs: dict[str, Any], bars: bool) -> BulkPipelineResult:
    """The bulk pipeline with one bar over the stations' decisions; plain lines without a
    terminal."""
    from flts.pipeline import run_bulk_pipeline

    if not bars:
        return run_bulk_pipeline(
            settings, progress=lambda msg: err_console.print(msg, highlight=False), **kwargs
        )
    with progress_bar() as progress:
        task = progress.add_task("pipeline: splitting and uploading stations", total=None)

        def say(message: str) -> None:
            if message.startswith(("uploaded", "rejected")):
                progress.console.print(message, highlight=False)

        return run_bulk_pipeline(
            settings,
            progress=say,
            on_upload=lambda count: progress.update(
                task, total=count, description="pipeline: stations decided"
            ),
            on_station=lambda _result: progress.advance(task),
            **kwargs,
        )


def _print_bulk(result: BulkPipelineResult) -> None:
    from rich.table import Table

    table = Table(
        title=f"Group {result.group}: {result.promoted} of {len(result.stations)} "
        "stations promoted (test NRMSE, lower is better)"
    )
    for name in ("station", "champion", "NRMSE", "promoted", "reason"):
        table.add_column(name, justify="right" if name == "NRMSE" else "left")
    for station in result.stations:
        champion = station.champion or {}
        table.add_row(
            station.identifier,
            str(champion.get("model_type", "-")),
            _number(champion.get("nrmse"), ".4f"),
            "yes" if station.champion else "no",
            station.reason,
        )
    console.print(table)
    if result.rejected:
        rejected = Table(title=f"{len(result.rejected)} stations rejected at upload")
        rejected.add_column("station")
        rejected.add_column("problems")
        for entry in result.rejected:
            rejected.add_row(str(entry["identifier"]), "\n".join(entry["problems"]))
        console.print(rejected)
    console.print(f"pipeline finished in {result.seconds:.1f}s")


def _run(settings: Settings, kwargs: dict[str, Any], bars: bool) -> PipelineResult:
    """The pipeline with a bar over its stages (upload, preprocess, one per model, evaluate)
    and one per training model's epochs; plain progress lines without a terminal."""
    from flts.pipeline import run_pipeline

    if not bars:
        return run_pipeline(
            settings, progress=lambda msg: err_console.print(msg, highlight=False), **kwargs
        )
    with progress_bar() as progress, epoch_bars(progress):
        stages = progress.add_task("pipeline: uploading", total=3 + len(kwargs["models"]))
        return run_pipeline(
            settings,
            progress=lambda _msg: None,
            on_stage=lambda update: _advance(progress, stages, update),
            **kwargs,
        )


def _advance(progress: Progress, task: Any, update: StageUpdate) -> None:
    if update.status != "running":
        progress.advance(task)
    next_step = {"upload": "preprocessing", "preprocess": "training", "evaluate": "decided"}
    if update.stage == "train":
        progress.console.print(update.message, highlight=False)
        description = "pipeline: training, then evaluating"
    else:
        description = f"pipeline: {next_step.get(update.stage, update.stage)}"
    progress.update(task, description=description)


def _print_result(result: PipelineResult) -> None:
    console.print(leaderboard_table(result.leaderboard, title=f"config {result.config_hash[:12]}"))
    per_horizon = horizon_table(result.to_json())
    if per_horizon is not None:
        console.print(per_horizon)
    champion = result.champion
    if champion:
        console.print(
            f"champion for {result.identifier}: {champion.get('model_type')} "
            f"(run {champion.get('run_id')}, NRMSE {champion.get('nrmse', float('nan')):.4f})"
        )
    else:
        console.print(f"no new champion for {result.identifier}: {result.reason}")
    console.print(f"pipeline finished in {result.seconds:.1f}s")


def _number(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, int | float) else "-"


def horizon_table(result: dict[str, Any]) -> Table | None:
    """Test NRMSE at each summary step and coverage of each interval level (pooled over
    steps), persistence first; ``None`` for a one-step task, which the leaderboard covers."""
    from rich.table import Table

    baseline = result.get("baseline_horizon", {})
    steps = sorted(int(step) for step in baseline)
    if len(steps) < 2:
        return None
    levels = [f"{float(level):g}" for level in result.get("interval_levels", [])]
    table = Table(title="Per horizon step (test NRMSE, lower is better; coverage of intervals)")
    table.add_column("model")
    for step in steps:
        table.add_column(f"NRMSE @{step}", justify="right")
    for level in levels:
        table.add_column(f"cov {level}%", justify="right")
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("persistence (baseline)", baseline, {})
    ]
    rows += [
        (str(row.get("model_type")), row.get("horizon", {}), row.get("coverage", {}))
        for row in result.get("leaderboard", [])
        if row.get("status") == "SUCCESS"
    ]
    for name, by_step, coverage in rows:
        table.add_row(
            name,
            *(_number(by_step.get(str(step), {}).get("nrmse"), ".4f") for step in steps),
            *(_number(coverage.get(level), ".1%") for level in levels),
        )
    return table


def leaderboard_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    from rich.table import Table

    table = Table(title=f"Leaderboard ({title}; test NRMSE, lower is better)")
    for name in ("model", "NRMSE", "MAE5", "RMSE5", "train s", "promoted", "reason"):
        table.add_column(
            name, justify="right" if name in ("NRMSE", "MAE5", "RMSE5", "train s") else "left"
        )

    for row in rows:
        table.add_row(
            str(row.get("model_type")),
            _number(row.get("nrmse"), ".4f"),
            _number(row.get("mae5"), ".4g"),
            _number(row.get("rmse5"), ".4g"),
            _number(row.get("train_seconds"), ".1f"),
            "yes" if row.get("promoted") else "no",
            str(row.get("reason", "")),
        )
    return table
