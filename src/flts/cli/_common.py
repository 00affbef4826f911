"""Helpers shared by CLI commands: consoles and turning FLTS errors into one clear line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from flts.exceptions import FLTSError

console = Console()
err_console = Console(stderr=True)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print an expected error as ``error: ...`` lines and exit 1, without a traceback."""
    try:
        yield
    except FLTSError as exc:
        problems = getattr(exc, "problems", None) or (str(exc),)
        for problem in problems:
            err_console.print(f"[bold red]error:[/] {problem}", highlight=False)
        raise typer.Exit(code=1) from exc


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    err_console.print(f"wrote {path}")
