"""``flts dlq list`` and ``flts dlq replay``: inspect dead letters and re-publish them.

Works on every bus backend (``FLTS_BUS_URL`` or ``--bus-url``). A dead letter is named by its
own position, ``dlq.<topic>/<partition>/<offset>`` (the ``id`` column); ``replay`` publishes
its original bytes, key and headers to the source topic (:meth:`flts.bus.Bus.replay`), where
the consumers process it like a new message. Dead letters stay in their DLQ (logs are
append-only), so replaying the same id twice publishes it twice; the handlers' idempotency
makes that harmless once one copy succeeded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, TypedDict

import typer

from flts.cli._common import (
    OutputFormat,
    OutputOption,
    console,
    emit,
    err_console,
    load_settings,
    user_errors,
)
from flts.exceptions import ConfigurationError
from flts.redaction import redact

if TYPE_CHECKING:
    from flts.bus import Bus, DeadLetter

#: :data:`flts.events.DLQ_PREFIX`, repeated so ``flts --help`` does not import pydantic.
DLQ_PREFIX = "dlq."

app = typer.Typer(help="Inspect and replay dead letters (dlq.<topic>).", no_args_is_help=True)

TopicOption = Annotated[
    str | None, typer.Option("--topic", help="Source topic (e.g. training-data); all if omitted.")
]
BusOption = Annotated[
    str | None,
    typer.Option("--bus-url", help="Bus URL; defaults to FLTS_BUS_URL / the settings."),
]


def _open(bus_url: str | None) -> Bus:
    from flts.bus import open_bus

    return open_bus(bus_url or load_settings().bus.url)


@app.command("list")
def list_letters(
    topic: TopicOption = None,
    limit: Annotated[int, typer.Option(min=1, help="Newest N per DLQ topic.")] = 50,
    bus_url: BusOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List dead letters with their provenance (source, group, attempts, error); -o json
    prints them as one JSON array."""
    with user_errors():
        bus = _open(bus_url)
        try:
            letters = bus.dead_letters(topic, limit=limit)
        finally:
            bus.close()
    rows = [_summary(letter) for letter in letters]
    emit(output, rows, lambda: _print_letters(rows))


def _print_letters(rows: list[_Row]) -> None:
    from rich.table import Table

    table = Table(title=f"Dead letters ({len(rows)})")
    for name in ("id", "source", "event", "group", "attempts", "failed at", "error"):
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(
            row["id"],
            row["source"],
            row["event_id"],
            row["group"],
            str(row["attempts"]),
            row["failed_at"][:19],
            row["error"][:100],
        )
    console.print(table)


@app.command("replay")
def replay(
    ids: Annotated[
        list[str] | None,
        typer.Option(
            "--id", help="Dead letter id (from `flts dlq list`), or its offset with --topic."
        ),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every listed dead letter (with --topic: its)")
    ] = False,
    topic: TopicOption = None,
    limit: Annotated[int, typer.Option(min=1, help="How far back to look, per DLQ.")] = 1000,
    bus_url: BusOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Re-publish dead letters to their source topic."""
    with user_errors():
        if bool(ids) == replay_all:
            raise ConfigurationError("choose the dead letters: --id ID (repeatable) or --all")
        wanted = [_full_id(i, topic) for i in ids or []]
        bus = _open(bus_url)
        try:
            if replay_all:
                chosen = bus.dead_letters(topic, limit=limit)
            else:
                chosen = _find(bus, wanted, limit)
            for letter in chosen:
                bus.replay(letter)
                err_console.print(f"replayed {letter.letter_id} -> {letter.source_topic}")
        finally:
            bus.close()
    emit(
        output,
        {"replayed": [{"id": d.letter_id, "topic": d.source_topic} for d in chosen]},
        lambda: console.print(f"replayed {len(chosen)} dead letter(s)"),
    )


def _full_id(raw: str, topic: str | None) -> str:
    """``dlq.t/p/o`` as given, or a bare offset (``3``) or ``p/o`` of ``--topic``'s DLQ."""
    if raw.startswith(DLQ_PREFIX):
        return raw
    if topic is None:
        raise ConfigurationError(f"dead letter id {raw!r} needs --topic (or use the full id)")
    return f"{DLQ_PREFIX}{topic}/{raw if '/' in raw else f'0/{raw}'}"


def _find(bus: Bus, wanted: list[str], limit: int) -> list[DeadLetter]:
    sources = {i.rsplit("/", 2)[0].removeprefix(DLQ_PREFIX) for i in wanted}
    found = {
        letter.letter_id: letter
        for source in sorted(sources)
        for letter in bus.dead_letters(source, limit=limit)
    }
    missing = [i for i in wanted if i not in found]
    if missing:
        raise ConfigurationError(f"no such dead letter(s): {', '.join(missing)}")
    return [found[i] for i in wanted]


class _Row(TypedDict):
    id: str
    source: str
    event_id: str
    group: str
    attempts: int
    failed_at: str
    error: str


def _summary(letter: DeadLetter) -> _Row:
    return {
        "id": letter.letter_id,
        "source": letter.source_message_id or letter.source_topic,
        "event_id": letter.headers.get("x-event-id", ""),
        "group": letter.group,
        "attempts": letter.attempts,
        "failed_at": letter.failed_at,
        "error": redact(letter.error),  # a handler's error may quote a backend URL
    }
