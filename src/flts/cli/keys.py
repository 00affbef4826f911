"""``flts keys``: create, list and revoke API keys in the keys file (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flts.cli._choices import KeyScope
from flts.cli._common import (
    OutputFormat,
    OutputOption,
    console,
    emit,
    err_console,
    load_settings,
    print_error,
    user_errors,
)

app = typer.Typer(help="Manage the API keys of the gateway and the inference API.")

#: The keys file of a home directory, used when ``security.keys_file`` is not set.
DEFAULT_KEYS_FILE = "api-keys.json"

KeysFileOption = Annotated[
    Path | None,
    typer.Option(
        "--keys-file",
        dir_okay=False,
        help="Keys file (default: FLTS_SECURITY__KEYS_FILE, else <home>/api-keys.json).",
    ),
]


def keys_path(option: Path | None = None) -> Path:
    """The keys file a command works on: the option, the setting, or the home's default."""
    if option is not None:
        return option
    settings = load_settings()
    return settings.security.keys_file or settings.home / DEFAULT_KEYS_FILE


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who holds the key; recorded as the actor.")],
    scope: Annotated[
        list[KeyScope],
        typer.Option("--scope", "-s", help="What the key may do (repeat for several)."),
    ],
    keys_file: KeysFileOption = None,
    replace: Annotated[
        bool, typer.Option(help="Replace an existing key of that name (it stops working).")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a key, store its salted hash and print the key: the only time it is shown."""
    from flts.security import create_key

    scopes = [s.value for s in scope]
    with user_errors():
        path = keys_path(keys_file)
        key = create_key(path, name, scopes, replace=replace)
    err_console.print(f"key {name!r} ({', '.join(scopes)}) added to {path}; it is shown once:")
    emit(
        output,
        {"name": name, "scopes": scopes, "keys_file": str(path), "key": key},
        lambda: console.print(key, highlight=False, soft_wrap=True),
    )


@app.command("list")
def list_keys(keys_file: KeysFileOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """The keys of the file: names, scopes, creation times (never the keys)."""
    from flts.security import read_keys

    with user_errors():
        path = keys_path(keys_file)
        document = read_keys(path)
    rows: list[dict[str, Any]] = [
        {
            "name": entry.name,
            "scopes": list(entry.scopes),
            "key_id": entry.key_id,
            "created_at": entry.created_at.isoformat(timespec="seconds"),
        }
        for entry in document.keys
    ]
    emit(output, rows, lambda: _print_keys(str(path), rows))


def _print_keys(title: str, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("name", "scopes", "key id", "created"):
        table.add_column(column)
    for row in rows:
        scopes = row["scopes"]
        assert isinstance(scopes, list)
        table.add_row(
            str(row["name"]), ", ".join(scopes), str(row["key_id"]), str(row["created_at"])
        )
    console.print(table)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The key to remove.")],
    keys_file: KeysFileOption = None,
) -> None:
    """Remove a key; services stop accepting it within security.reload_seconds."""
    from flts.security import revoke_key

    with user_errors():
        path = keys_path(keys_file)
        if not revoke_key(path, name):
            print_error(f"no key named {name!r} in {path}")
            raise typer.Exit(code=1)
    err_console.print(f"revoked {name!r} in {path}")
