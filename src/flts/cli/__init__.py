"""The ``flts`` command line: one typer app, one module per command group.

Building the app imports only typer, rich's console and the command modules, which import
their heavy dependencies inside the command bodies, so ``flts --help`` and ``flts CMD --help``
stay fast (``benchmarks/cli_startup.py`` measures it).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flts.cli import (
    backtest,
    benchmark,
    config,
    data,
    dlq,
    gc,
    keys,
    ops,
    pipeline,
    replay,
    services,
    up,
)
from flts.cli._common import FltsGroup, state
from flts.logs import LogLevel, configure_logging

app = typer.Typer(
    name="flts",
    cls=FltsGroup,
    help="FLTS: forecast cellular base-station load, from CSV to a served champion model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
benchmark.app.registered_commands += backtest.app.registered_commands
app.add_typer(benchmark.app, name="benchmark")
app.add_typer(data.app, name="data")
app.add_typer(config.app, name="config")
app.add_typer(dlq.app, name="dlq")
app.add_typer(keys.app, name="keys")
app.registered_commands += pipeline.app.registered_commands
app.registered_commands += services.app.registered_commands
app.registered_commands += up.app.registered_commands
app.registered_commands += ops.app.registered_commands
app.registered_commands += gc.app.registered_commands
app.registered_commands += replay.app.registered_commands


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"flts {version('flts')}")
        except PackageNotFoundError:  # a source checkout run without installing it
            from flts import __version__

            typer.echo(f"flts {__version__}")
        raise typer.Exit


@app.callback()
def root(
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            "--log-level",
            envvar="FLTS_LOG_LEVEL",
            case_sensitive=False,
            help="Log level (FLTS_LOG_LEVEL). Default: info for services, warning otherwise.",
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an unexpected error.")
    ] = False,
    _show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """FLTS: forecast cellular base-station load, from CSV to a served champion model."""
    state.debug = debug
    state.log_level = log_level
    state.service = False
    if log_level is not None:
        # Processes started from here (flts up's children) and Settings see the same level.
        os.environ["FLTS_LOG_LEVEL"] = log_level.value
    # Log lines of a command (a warning of a library, a service thread of flts pipeline) are
    # JSON on stderr like every service's; services reconfigure with their own name.
    configure_logging("flts", log_level or LogLevel.WARNING)


def main() -> None:
    app()
