"""``flts benchmark accuracy``: measure models with the pipeline's own code and report JSON.

Serving benchmarks are not product commands: they live in the checkout's ``benchmarks/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from flts.cli._common import console, err_console, user_errors, write_json

app = typer.Typer(help="Benchmarks: accuracy on held-out data.", no_args_is_help=True)

#: Defaults repeated here (not imported) so ``flts --help`` does not import every model.
DEFAULT_STATIONS = "PobleSec,ElBorn,LesCorts"
DEFAULT_MODELS = "PERSISTENCE,SEASONAL_NAIVE,RIDGE,PROPHET,LSTM,GRU,MLP,ENSEMBLE"


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


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
    models: Annotated[str, typer.Option(help="Comma-separated model types.")] = DEFAULT_MODELS,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per model and station.")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Train and score every model on every station's held-out test file."""
    from flts.accuracy import run_accuracy_benchmark
    from flts.models import parse_model_types

    with user_errors():
        document = run_accuracy_benchmark(
            data_dir,
            stations=_split(stations),
            models=parse_model_types(models),
            seeds=seeds,
            progress=lambda msg: err_console.print(msg, highlight=False),
        )
    console.print(_summary_table(document))
    if json_out is not None:
        write_json(json_out, document)


def _summary_table(document: dict[str, Any]) -> Table:
    table = Table(title="Test NRMSE (mean ± std over seeds; lower is better)")
    for name in ("station", "model", "NRMSE", "MAE5", "RMSE5", "train s (median)"):
        table.add_column(name, justify="left" if name in ("station", "model") else "right")
    for entry in sorted(document["summary"], key=lambda e: (e["station"], e["nrmse_mean"])):
        table.add_row(
            entry["station"],
            entry["model"],
            f"{entry['nrmse_mean']:.4f} ± {entry['nrmse_std']:.4f}",
            f"{entry['mae5_mean']:.4g}",
            f"{entry['rmse5_mean']:.4g}",
            f"{entry['train_seconds_median']:.1f}",
        )
    for entry in document["station_mean"]:
        table.add_row(
            f"mean of {len(entry['stations'])}",
            entry["model"],
            f"{entry['nrmse_mean']:.4f}",
            f"{entry['mae5_mean']:.4g}",
            f"{entry['rmse5_mean']:.4g}",
            "",
            style="bold",
        )
    return table
