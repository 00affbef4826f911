"""``flts config``: show the configuration a process would run with."""

from __future__ import annotations

import json

import typer

from flts.cli._common import console, load_settings, user_errors

app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@app.command("show")
def show() -> None:
    """Print the resolved settings (environment + defaults) with secrets masked."""
    with user_errors():
        settings = load_settings()
    console.print_json(json.dumps(settings.redacted()))
