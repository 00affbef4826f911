"""Helpers shared by CLI commands: consoles, the ``-o``/``--json-file`` options, printing a
result as a table or JSON, and turning every error into one clear line.

Imported by ``flts --help``: only typer, rich's console and the standard library at module
level (pandas, numpy, pydantic settings, MLflow, torch and FastAPI are imported inside the
commands that need them; ``tests/unit/test_cli_imports.py`` holds that line).
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from flts.exceptions import ConfigurationError, FLTSError
from flts.logs import LogLevel
from flts.redaction import redact

if TYPE_CHECKING:
    from flts.settings import Settings

# Piped output (CI logs, files) gets a wide fixed width so tables do not wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
# soft_wrap: an error stays one line however narrow the terminal.
err_console = Console(stderr=True, soft_wrap=True)


class OutputFormat(StrEnum):
    """``-o/--output``: tables for people, one JSON document on stdout for scripts."""

    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="table, or json: one JSON document on stdout (messages stay on stderr).",
    ),
]
JsonFileOption = Annotated[
    Path | None,
    typer.Option(
        "--json-file", dir_okay=False, help="Also write the full result as JSON to this file."
    ),
]


@dataclass
class CliState:
    """What the root options chose, for the commands and the error handler."""

    debug: bool = False
    log_level: LogLevel | None = None
    #: A service runs (worker, serve, gateway): its stderr is a JSON log stream.
    service: bool = False


state = CliState()


def emit(output: OutputFormat, document: Any, render: Callable[[], None]) -> None:
    """Print ``document`` as JSON on stdout, or call ``render`` (tables for people)."""
    if output is OutputFormat.JSON:
        typer.echo(json.dumps(document, indent=2, default=str))
    else:
        render()


def print_error(message: str) -> None:
    """One ``error: ...`` line on stderr (secrets masked); a JSON log line instead in a
    service process, whose stderr is a log stream."""
    if state.service:
        import logging

        logging.getLogger("flts").error(redact(message))
        return
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(redact(message))}", highlight=False)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an expected error as ``error: ...`` lines (secrets masked) and exit 1, without a
    traceback."""
    try:
        yield
    except FLTSError as exc:
        for problem in exc.problems:
            print_error(problem)
        raise typer.Exit(code=1) from exc


class FltsGroup(TyperGroup):
    """The root command: every failure ends as ``error: ...`` lines and a non-zero status.

    Usage errors (unknown option, bad choice) print one line and exit 2, FLTS errors one line
    per problem and exit 1, anything unexpected ``error: <Type>: <message>`` and exit 1; the
    traceback only with ``--debug`` (and, in a service, as the ``error`` field of its JSON
    log line).
    """

    def main(  # type: ignore[override]
        self,
        args: list[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = result if isinstance(result, int) else 0
        except typer.TyperException as exc:  # typer's usage and parameter errors
            code = exc.exit_code
            if type(exc).__name__ == "NoArgsIsHelpError":  # a group without its command
                typer.echo(exc.format_message(), err=True)  # the message is the group's help
            else:
                print_error(exc.format_message())
        except typer.Abort:
            print_error("aborted")
            code = 1
        except FLTSError as exc:
            for problem in exc.problems:
                print_error(problem)
            code = 1
        except Exception as exc:
            code = 1
            _unexpected(exc)
        if not standalone_mode:
            return code
        sys.exit(code)


def _unexpected(exc: Exception) -> None:
    if state.service:
        import logging

        logging.getLogger("flts").critical(
            "%s: %s", type(exc).__name__, redact(str(exc)), exc_info=exc
        )
        return
    if state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    print_error(f"{type(exc).__name__}: {exc} (run with --debug for the traceback)")


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    err_console.print(f"wrote {path}", highlight=False)


def load_settings() -> Settings:
    """Settings from the environment; an invalid value is one clear line, not a traceback,
    and never echoes a secret (pydantic's messages can quote the value)."""
    from pydantic import ValidationError

    from flts.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        lines = [
            f"{'.'.join(str(p) for p in error['loc']) or 'settings'}: {redact(error['msg'])}"
            for error in exc.errors()
        ]
        raise ConfigurationError("invalid configuration: " + "; ".join(lines)) from exc
