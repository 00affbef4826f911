"""``flts benchmark accuracy``: measure models with the pipeline's own code and report JSON.

Serving benchmarks are not product commands: they live in the checkout's ``benchmarks/``."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from flts.cli._choices import ModelsOption, model_list
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

app = typer.Typer(help="Benchmarks: accuracy on held-out data.", no_args_is_help=True)

#: Defaults repeated here (not imported) so ``flts --help`` does not import every model.
DEFAULT_STATIONS = "PobleSec,ElBorn,LesCorts"
DEFAULT_MODELS = "PERSISTENCE,SEASONAL_NAIVE,RIDGE,PROPHET,LSTM,GRU,MLP,ENSEMBLE,GLOBAL"
DEFAULT_INTERVALS = "80,95"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _numbers(text: str, name: str, kind: type[int] | type[float]) -> list[Any]:
    try:
        return [kind(part) for part in _split(text)]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from exc


@app.command("accuracy")
def accuracy(
    data_dir: Annotated[
        Path,
        typer.Option(
            exists=True, file_okay=False, help="Directory with <station>.csv and _test.csv."
        ),
    ],
    stations: Annotated[
        str, typer.Option(help="Comma-separated station names.")
    ] = DEFAULT_STATIONS,
    models: ModelsOption = DEFAULT_MODELS,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per model and station.")] = 5,
    horizons: Annotated[
        str | None,
        typer.Option(help="Comma-separated horizons (steps), each its own task; default 1."),
    ] = None,
    intervals: Annotated[
        str, typer.Option(help="Comma-separated interval levels (%) to score; '' for none.")
    ] = DEFAULT_INTERVALS,
    json_file: JsonFileOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Train and score every model on every station's held-out test file; each row reports
    the figures at the last step of its horizon."""
    from flts.accuracy import run_accuracy_benchmark

    steps = None if horizons is None else _numbers(horizons, "--horizons", int)
    levels = _numbers(intervals, "--intervals", float)
    chosen, names = model_list(models), _split(stations)
    progress = progress_bar() if show_progress(output) else None
    with (
        user_errors(),
        progress or nullcontext(),
        epoch_bars(progress) if progress else nullcontext(),
    ):
        # Every (station, horizon, model, seed) is one training: the bar's unit.
        total = len(names) * len(steps or [1]) * len(chosen) * seeds
        task = progress.add_task("benchmark", total=total) if progress else None

        def say(message: str) -> None:
            (progress.console if progress else err_console).print(message, highlight=False)

        def advance(row: dict[str, Any]) -> None:
            if progress is not None and task is not None:
                progress.update(task, advance=1, description=f"{row['station']} {row['model']}")

        document = run_accuracy_benchmark(
            data_dir,
            stations=names,
            models=chosen,
            seeds=seeds,
            horizons=steps,
            levels=levels,
            progress=say,
            on_result=advance,
        )
    emit(output, document, lambda: console.print(_summary_table(document)))
    if json_file is not None:
        write_json(json_file, document)


def _summary_table(document: dict[str, Any]) -> Table:
    from rich.table import Table

    levels = [f"{level:g}" for level in document["protocol"]["interval_levels"]]
    table = Table(
        title="Test NRMSE at the last step of each horizon (mean ± std over seeds; lower is "
        "better), MASE against persistence, interval coverage"
    )
    columns = ["station", "model", "h", "NRMSE", "MAE5", "MASE", "wQL"]
    columns += [f"cov {level}" for level in levels] + ["train s (median)"]
    for name in columns:
        table.add_column(name, justify="left" if name in ("station", "model") else "right")

    def number(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, int | float) else "-"

    def figures(entry: dict[str, Any]) -> list[str]:
        coverage = entry.get("coverage_mean", {})
        return [
            number(entry.get("mae5_mean"), ".4g"),
            number(entry.get("mase_mean"), ".3f"),
            number(entry.get("wql_mean"), ".4f"),
            *(number(coverage.get(level), ".1%") for level in levels),
        ]

    for entry in sorted(
        document["summary"], key=lambda e: (e["station"], e["horizon"], e["nrmse_mean"])
    ):
        table.add_row(
            entry["station"],
            entry["model"],
            str(entry["horizon"]),
            f"{entry['nrmse_mean']:.4f} ± {entry['nrmse_std']:.4f}",
            *figures(entry),
            f"{entry['train_seconds_median']:.1f}",
        )
    for entry in document["station_mean"]:
        table.add_row(
            f"mean of {len(entry['stations'])}",
            entry["model"],
            str(entry["horizon"]),
            f"{entry['nrmse_mean']:.4f}",
            *figures(entry),
            "",
            style="bold",
        )
    return table
