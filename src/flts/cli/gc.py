"""``flts gc``: apply the retention rules (:mod:`flts.retention`, ``FLTS_RETENTION__*``).

``--dry-run`` lists what would go without deleting anything; ``-o json`` prints one document
(``dry_run``, ``deleted`` or ``would_delete``, ``kept``, ``notes``) for scripts and cron jobs.
Run it where the model cache lives too (each replica's ``<home>/cache/models``) to prune that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from flts.cli._choices import RetentionKind
from flts.cli._common import OutputFormat, OutputOption, console, emit, load_settings, user_errors

if TYPE_CHECKING:
    from flts.retention import Item

app = typer.Typer()


@app.command("gc")
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be deleted; delete nothing.")
    ] = False,
    only: Annotated[
        list[RetentionKind] | None,
        typer.Option("--only", help="Only this kind (repeatable); default: every kind."),
    ] = None,
    dead_letters: Annotated[
        bool | None,
        typer.Option(
            "--dead-letters/--keep-dead-letters",
            help="Delete old dead letters too (default: FLTS_RETENTION__DEAD_LETTERS, off).",
        ),
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete old bus rows, datasets, processed data, inference logs and cached models that
    no champion or promotion history needs."""
    from flts import retention
    from flts.storage import ObjectStore

    with user_errors():
        settings = load_settings()
        if dead_letters is not None:
            rules = settings.retention.model_copy(update={"dead_letters": dead_letters})
            settings = settings.model_copy(update={"retention": rules})
        wanted = {kind.value for kind in only or ()}
        kinds = [k for k in retention.KINDS if not wanted or k in wanted]
        store = ObjectStore(settings.storage.url, **settings.storage.options())
        planned = retention.plan(settings, store, kinds=kinds)
        deleted = planned.deletions if dry_run else retention.apply(settings, store, planned)
    kept = [i for i in planned.items if i.action == "keep"]
    document = {
        "dry_run": dry_run,
        "would_delete" if dry_run else "deleted": [i.summary() for i in deleted],
        "kept": [i.summary() for i in kept],
        "notes": planned.notes,
    }
    emit(output, document, lambda: _print_table(dry_run, deleted, kept, planned.notes))


def _print_table(dry_run: bool, deleted: list[Item], kept: list[Item], notes: list[str]) -> None:
    from rich.table import Table

    verb = "would delete" if dry_run else "deleted"
    table = Table(title=f"flts gc{' --dry-run' if dry_run else ''}")
    for name in ("kind", "action", "target", "objects", "why"):
        table.add_column(name, overflow="fold")
    for item in deleted:
        table.add_row(item.kind, f"[red]{verb}[/]", item.target, str(item.count), item.reason)
    for item in kept:
        table.add_row(item.kind, "[green]kept[/]", item.target, str(item.count), item.reason)
    console.print(table)
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"{verb} {len(deleted)} item(s) ({sum(i.count for i in deleted)} objects/rows)")
