"""Helpers shared by CLI commands: consoles and turning FLTS errors into one clear line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from flts.exceptions import ConfigurationError, FLTSError
from flts.redaction import redact

if TYPE_CHECKING:
    from flts.settings import Settings

# Piped output (CI logs, files) gets a wide fixed width so tables do not wrap at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
# soft_wrap: an error stays one line however narrow the terminal.
err_console = Console(stderr=True, soft_wrap=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an expected error as ``error: ...`` lines (secrets masked) and exit 1, without a
    traceback."""
    try:
        yield
    except FLTSError as exc:
        for problem in exc.problems:
            err_console.print(f"[bold red]error:[/] {redact(problem)}", highlight=False)
        raise typer.Exit(code=1) from exc


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    err_console.print(f"wrote {path}")


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
