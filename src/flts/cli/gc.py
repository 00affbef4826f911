"""``flts gc``: apply the retention rules (:mod:`flts.retention`, ``FLTS_RETENTION__*``).

``--dry-run`` lists what would go without deleting anything; ``--json`` prints one document
(``dry_run``, ``deleted`` or ``would_delete``, ``kept``, ``notes``) for scripts and cron jobs.
Run it where the model cache lives too (each replica's ``<home>/cache/models``) to prune that.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from flts.cli._common import console, load_settings, user_errors

app = typer.Typer()


@app.command("gc")
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="bus, datasets, processed, logs or model-cache (repeatable); all."
        ),
    ] = None,
    dead_letters: Annotated[
        bool | None,
        typer.Option(
            "--dead-letters/--keep-dead-letters",
            help="Delete old dead letters too (default: FLTS_RETENTION__DEAD_LETTERS, off).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Delete old bus rows, datasets, processed data, inference logs and cached models that
    no champion or promotion history needs."""
    from flts import retention
    from flts.exceptions import ConfigurationError
    from flts.storage import ObjectStore

    with user_errors():
        settings = load_settings()
        if dead_letters is not None:
            rules = settings.retention.model_copy(update={"dead_letters": dead_letters})
            settings = settings.model_copy(update={"retention": rules})
        unknown = sorted(set(only or ()) - set(retention.KINDS))
        if unknown:
            raise ConfigurationError(
                f"unknown kinds {unknown}; choose from {', '.join(retention.KINDS)}"
            )
        kinds = [k for k in retention.KINDS if not only or k in only]
        store = ObjectStore(settings.storage.url, **settings.storage.options())
        planned = retention.plan(settings, store, kinds=kinds)
        deleted = planned.deletions if dry_run else retention.apply(settings, store, planned)
    kept = [i for i in planned.items if i.action == "keep"]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "would_delete" if dry_run else "deleted": [i.summary() for i in deleted],
                    "kept": [i.summary() for i in kept],
                    "notes": planned.notes,
                },
                indent=2,
            )
        )
        return
    verb = "would delete" if dry_run else "deleted"
    table = Table(title=f"flts gc{' --dry-run' if dry_run else ''}")
    for name in ("kind", "action", "target", "objects", "why"):
        table.add_column(name, overflow="fold")
    for item in deleted:
        table.add_row(item.kind, f"[red]{verb}[/]", item.target, str(item.count), item.reason)
    for item in kept:
        table.add_row(item.kind, "[green]kept[/]", item.target, str(item.count), item.reason)
    console.print(table)
    for note in planned.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"{verb} {len(deleted)} item(s) ({sum(i.count for i in deleted)} objects/rows)")
