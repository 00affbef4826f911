"""``flts benchmark backtest``: compare model configurations on the training files only.

This is how defaults are chosen (docs/architecture.md, rule 14); ``flts benchmark accuracy``
then scores the chosen defaults once on the test files."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flts.cli._common import (
    JsonFileOption,
    OutputFormat,
    OutputOption,
    console,
    emit,
    err_console,
    user_errors,
    write_json,
)
from flts.cli._progress import epoch_bars, progress_bar, show_progress

if TYPE_CHECKING:
    from rich.table import Table

app = typer.Typer(help="Rolling-origin backtest inside the training files.")

#: Repeated here (not imported) so ``flts --help`` does not import every model.
DEFAULT_STATIONS = "PobleSec,ElBorn,LesCorts"


@app.command("backtest")
def backtest(
    data_dir: Annotated[
        Path,
        typer.Option(exists=True, file_okay=False, help="Directory with <station>.csv files."),
    ],
    stations: Annotated[
        str, typer.Option(help="Comma-separated station names.")
    ] = DEFAULT_STATIONS,
    folds: Annotated[int, typer.Option(min=1, help="Consecutive blocks scored per file.")] = 3,
    block_fraction: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Rows per block, as a share of the file.")
    ] = 0.1,
    candidates: Annotated[
        str, typer.Option(help="'default' or a JSON list of {name, model, params}.")
    ] = "default",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per candidate and fold.")] = 1,
    json_file: JsonFileOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Rank configurations by backtest NRMSE on the training files (test files never read)."""
    from flts.backtest import load_candidates, run_backtest

    names = [part.strip() for part in stations.split(",") if part.strip()]
    with user_errors():
        chosen = load_candidates(candidates)
        total = len(names) * folds * len(chosen) * seeds
        bars = show_progress(output)
        progress = progress_bar() if bars else None
        with progress or nullcontext(), epoch_bars(progress) if progress else nullcontext():
            task = progress.add_task("backtest", total=total) if progress else None

            def advance(row: dict[str, Any]) -> None:
                line = (
                    f"{row['station']:<10} fold {row['fold']} seed {row['seed']} "
                    f"{row['candidate']:<32} NRMSE {row['nrmse']:.4f}  "
                    f"train {row['train_seconds']:.1f}s"
                )
                if progress is None or task is None:
                    err_console.print(line, highlight=False)
                    return
                progress.update(
                    task,
                    advance=1,
                    description=f"{row['station']} fold {row['fold']} {row['candidate']}",
                )
                progress.console.print(line, highlight=False)

            document = run_backtest(
                data_dir,
                stations=names,
                candidates=chosen,
                folds=folds,
                seeds=seeds,
                block_fraction=block_fraction,
                on_result=advance,
            )
    emit(output, document, lambda: console.print(_ranking_table(document)))
    if json_file is not None:
        write_json(json_file, document)


def _ranking_table(document: dict[str, Any]) -> Table:
    from rich.table import Table

    stations = list(document["protocol"]["recipes"])
    table = Table(title="Backtest NRMSE (mean over folds; lower is better)")
    for name in ("rank", "candidate", *stations, "mean", "MAE5", "RMSE5"):
        table.add_column(name, justify="left" if name == "candidate" else "right")
    best = set(document["winners"].values())
    for entry in document["ranking"]:
        table.add_row(
            str(entry["rank"]),
            entry["candidate"],
            *(f"{entry['per_station_nrmse'][s]:.4f}" for s in stations),
            f"{entry['nrmse']:.4f}",
            f"{entry['mae5']:.4g}",
            f"{entry['rmse5']:.4g}",
            style="bold" if entry["candidate"] in best else None,
        )
    return table
