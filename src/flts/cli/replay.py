"""``flts replay``: stream a traffic CSV into the gateway as live observations."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from flts.cli._common import (
    OutputFormat,
    OutputOption,
    console,
    emit,
    err_console,
    load_settings,
    user_errors,
)
from flts.cli._progress import progress_bar, show_progress

app = typer.Typer()


@app.command("replay")
def replay(
    csv: Annotated[
        Path, typer.Option("--csv", exists=True, dir_okay=False, help="Traffic CSV to replay.")
    ],
    identifier: Annotated[str, typer.Option(help="Station the rows belong to.")],
    speed: Annotated[
        float, typer.Option(min=0.001, help="Times real time (600: an hour of rows in 6 s).")
    ] = 600.0,
    shift_after: Annotated[
        int | None,
        typer.Option(min=0, help="Inject a regime change from this row (0-based) on."),
    ] = None,
    scale: Annotated[
        float, typer.Option(min=0.0, help="Factor of the regime change (with --shift-after).")
    ] = 2.5,
    columns: Annotated[str, typer.Option(help="Comma-separated columns the change scales.")] = (
        "down,up"
    ),
    gateway: Annotated[
        str | None, typer.Option(help="Gateway URL (default: the configured host and port).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FLTS_API_KEY", help="Key with the upload scope (or FLTS_API_KEY)."),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Send the rows of CSV to POST /v1/observations at SPEED times their own cadence."""
    from flts.live.replay import replay as run_replay
    from flts.live.replay import replay_rows

    with user_errors():
        settings = load_settings()
        rows = replay_rows(
            csv,
            settings.feature_spec,
            shift_after=shift_after,
            scale=scale if shift_after is not None else 1.0,
            columns=tuple(c.strip() for c in columns.split(",") if c.strip()),
        )
    url = gateway or f"http://{settings.gateway.host}:{settings.gateway.port}"
    err_console.print(
        f"replaying {len(rows)} rows of {csv.name} as {identifier!r} into {url} at {speed:g}x"
        + (f", x{scale:g} from row {shift_after}" if shift_after is not None else "")
    )
    progress = progress_bar() if show_progress(output) else None
    with user_errors(), progress or nullcontext():
        task = progress.add_task("rows", total=len(rows)) if progress else None
        report = run_replay(
            rows,
            identifier=identifier,
            gateway=url,
            api_key=api_key or os.environ.get("FLTS_API_KEY"),
            speed=speed,
            max_rows_per_request=settings.live.max_rows_per_request,
            time_column=settings.feature_spec.time_column,
            on_sent=lambda n: progress.advance(task, n) if progress and task is not None else None,
        )
    emit(
        output,
        report.as_dict(),
        lambda: console.print(
            f"sent {report.rows} rows in {report.requests} requests ({report.seconds:.1f} s): "
            f"{report.accepted} new, {report.duplicates} already stored, {report.retries} retries"
        ),
    )
