"""``flts data``: check a traffic CSV against the data contract before uploading it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flts.cli._common import console, user_errors
from flts.data import FeatureSpec, content_digest, read_traffic_csv

app = typer.Typer(help="Inspect and validate traffic data.", no_args_is_help=True)


@app.command("validate")
def validate(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Traffic CSV file.")],
    lags: Annotated[int, typer.Option(help="Input rows per window.")] = 10,
    horizon: Annotated[int, typer.Option(help="Rows forecast per window.")] = 1,
    frequency: Annotated[str, typer.Option(help="Expected sampling step.")] = "2min",
) -> None:
    """Validate CSV against the default feature spec; list every problem, or summarise it."""
    with user_errors():
        spec = FeatureSpec(lags=lags, horizon=horizon, frequency=frequency)
        table = read_traffic_csv(csv, spec)
    frame = table.frame
    summary = Table(title=f"{csv.name}: {len(frame)} rows, every {table.frequency}")
    for name in ("column", "min", "max", "mean", "missing"):
        summary.add_column(name, justify="left" if name == "column" else "right")
    for column in frame.columns:
        series = frame[column]
        summary.add_row(
            column,
            f"{series.min():.4g}",
            f"{series.max():.4g}",
            f"{series.mean():.4g}",
            str(int(series.isna().sum())),
        )
    console.print(summary)
    console.print(f"span {frame.index[0]} -> {frame.index[-1]}; {content_digest(csv)}")
