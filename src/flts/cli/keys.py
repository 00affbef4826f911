"""``flts keys``: create, list and revoke API keys in the keys file (docs/security.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flts.cli._common import console, err_console, load_settings, user_errors

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
        list[str],
        typer.Option("--scope", "-s", help="forecast, upload or admin (repeat for several)."),
    ],
    keys_file: KeysFileOption = None,
    replace: Annotated[
        bool, typer.Option(help="Replace an existing key of that name (it stops working).")
    ] = False,
) -> None:
    """Create a key, store its salted hash and print the key: the only time it is shown."""
    from flts.security import create_key

    with user_errors():
        path = keys_path(keys_file)
        key = create_key(path, name, scope, replace=replace)
    err_console.print(f"key {name!r} ({', '.join(scope)}) added to {path}; it is shown once:")
    console.print(key, highlight=False, soft_wrap=True)


@app.command("list")
def list_keys(keys_file: KeysFileOption = None) -> None:
    """The keys of the file: names, scopes, creation times (never the keys)."""
    from flts.security import read_keys

    with user_errors():
        path = keys_path(keys_file)
        document = read_keys(path)
    table = Table(title=str(path))
    for column in ("name", "scopes", "key id", "created"):
        table.add_column(column)
    for entry in document.keys:
        table.add_row(
            entry.name,
            ", ".join(entry.scopes),
            entry.key_id,
            entry.created_at.isoformat(timespec="seconds"),
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
            err_console.print(f"[bold red]error:[/] no key named {name!r} in {path}")
            raise typer.Exit(code=1)
    err_console.print(f"revoked {name!r} in {path}")
