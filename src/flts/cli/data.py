"""``flts data``: check a traffic CSV against the data contract before uploading it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flts.cli._common import OutputFormat, OutputOption, console, emit, user_errors

app = typer.Typer(help="Inspect and validate traffic data.", no_args_is_help=True)


@app.command("validate")
def validate(
    csv: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Traffic CSV file.")],
    lags: Annotated[int, typer.Option(help="Input rows per window.")] = 10,
    horizon: Annotated[int, typer.Option(help="Rows forecast per window.")] = 1,
    frequency: Annotated[str, typer.Option(help="Expected sampling step.")] = "2min",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Validate CSV against the default feature spec; list every problem (one ``error:``
    line each, exit status 1), or summarise it."""
    from flts.data import FeatureSpec, content_digest, read_traffic_csv

    with user_errors():
        spec = FeatureSpec(lags=lags, horizon=horizon, frequency=frequency)
        table = read_traffic_csv(csv, spec)
    frame = table.frame
    document: dict[str, Any] = {
        "file": str(csv),
        "valid": True,
        "rows": len(frame),
        "frequency": str(table.frequency),
        "start": frame.index[0].isoformat(),
        "end": frame.index[-1].isoformat(),
        "digest": content_digest(csv),
        "columns": [
            {
                "column": column,
                "min": float(frame[column].min()),
                "max": float(frame[column].max()),
                "mean": float(frame[column].mean()),
                "missing": int(frame[column].isna().sum()),
            }
            for column in frame.columns
        ],
    }
    emit(output, document, lambda: _print_summary(csv, document))


def _print_summary(csv: Path, document: dict[str, Any]) -> None:
    from rich.table import Table

    summary = Table(title=f"{csv.name}: {document['rows']} rows, every {document['frequency']}")
    for name in ("column", "min", "max", "mean", "missing"):
        summary.add_column(name, justify="left" if name == "column" else "right")
    for row in document["columns"]:
        summary.add_row(
            row["column"],
            f"{row['min']:.4g}",
            f"{row['max']:.4g}",
            f"{row['mean']:.4g}",
            str(row["missing"]),
        )
    console.print(summary)
    console.print(f"span {document['start']} -> {document['end']}; {document['digest']}")
