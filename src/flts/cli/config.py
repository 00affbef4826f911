"""``flts config``: show the configuration a process would run with."""

from __future__ import annotations

from typing import Any

import typer

from flts.cli._common import OutputFormat, OutputOption, console, emit, load_settings, user_errors

app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)


@app.command("show")
def show(output: OutputOption = OutputFormat.TABLE) -> None:
    """Print the resolved settings (environment + defaults) with secrets masked: a table of
    FLTS_* names and values, or the nested document with -o json."""
    with user_errors():
        settings = load_settings()
    document = settings.redacted()
    emit(output, document, lambda: _print_table(document))


def _print_table(document: dict[str, Any]) -> None:
    import json

    from rich.table import Table

    table = Table(title="Configuration (secrets masked)")
    table.add_column("setting", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in _flatten(document):
        shown = value if isinstance(value, str) else json.dumps(value)
        table.add_row(name, shown)
    console.print(table)


def _flatten(node: dict[str, Any], prefix: str = "FLTS_") -> list[tuple[str, Any]]:
    """``{"bus": {"url": ...}}`` -> ``[("FLTS_BUS__URL", ...)]``: the variable that sets each."""
    rows: list[tuple[str, Any]] = []
    for key, value in node.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict) and prefix == "FLTS_" and value:
            rows += _flatten(value, f"{name}__")
        else:
            rows.append((name, value))
    return rows
