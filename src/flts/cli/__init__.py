"""The ``flts`` command line: one typer app, one module per command group."""

from __future__ import annotations

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

app = typer.Typer(
    name="flts",
    help="FLTS: forecast cellular base-station load, from CSV to a served champion model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
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


def main() -> None:
    app()
