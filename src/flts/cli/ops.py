"""Operator commands: ``flts status``, ``flts promote``, ``flts rollback``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from flts.cli._choices import FleetSort, FleetState, SortOrder
from flts.cli._common import OutputFormat, OutputOption, console, emit, load_settings, user_errors
from flts.redaction import redact

if TYPE_CHECKING:
    from flts.promotion import Promotion

app = typer.Typer()


@app.command("status")
def status(
    identifier: Annotated[str | None, typer.Option(help="Only this station or tenant.")] = None,
    sort: Annotated[
        FleetSort, typer.Option(help="Order the fleet's stations by this column.")
    ] = FleetSort.IDENTIFIER,
    order: Annotated[SortOrder, typer.Option(help="asc or desc.")] = SortOrder.ASC,
    limit: Annotated[
        int, typer.Option(min=1, max=500, help="Stations shown (one page of the fleet).")
    ] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Stations skipped before the page.")] = 0,
    query: Annotated[
        str, typer.Option("--query", "-q", help="Only stations whose name or model type has this.")
    ] = "",
    state: Annotated[
        FleetState | None, typer.Option(help="Only stations in this retraining state.")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The fleet's overview and one page of its stations (champion with its evaluation, batch
    and live error), recent decisions, retraining triggers and their outcome, pending events
    and dead letters. ``--identifier`` shows one station, read from its pointer."""
    from flts.fleet.summary import FleetSummary
    from flts.live.monitor import read_figures
    from flts.live.triggers import read_triggers
    from flts.promotion import list_decisions
    from flts.services.batch_inference import latest_live_scores
    from flts.services.context import ServiceContext

    with user_errors():
        context = ServiceContext(load_settings())
    try:
        with user_errors():
            fleet: dict[str, Any] | None = None
            if identifier:
                identifiers = [identifier]
            else:
                fleet = FleetSummary(context.store).page(
                    offset=offset,
                    limit=limit,
                    sort=sort.value,
                    order=order.value,
                    query=query,
                    state="" if state is None else state.value,
                )
                identifiers = [row["identifier"] for row in fleet["rows"]]
            monitored = read_figures(context.store) or {"figures": [], "updated_at": None}
            champions: list[dict[str, Any]] = []
            for name in identifiers:
                current = context.promotions.current(name)
                if current is None:
                    champions.append({"identifier": name, "champion": None})
                    continue
                batch = latest_live_scores(context.store, name) or {}
                live = [
                    f
                    for f in monitored["figures"]
                    if f["identifier"] == name and f["run_id"] == current.run_id
                ]
                champions.append(
                    {
                        "identifier": name,
                        "champion": current.model_dump(mode="json"),
                        "evaluation_nrmse": current.scores.get("nrmse"),
                        "batch_nrmse": (batch.get("scores") or {}).get("nrmse"),
                        "live": sorted(live, key=lambda f: int(f["step"])),
                    }
                )
            decisions = list_decisions(context.store, identifier)[-10:]
            retraining = read_triggers(context.store, identifier)[-10:]
            backlog = [lag for lag in context.bus.lag() if lag.pending]
            letters = context.bus.dead_letters(limit=10)
            document = {
                "fleet": None if fleet is None else {k: v for k, v in fleet.items() if k != "rows"},
                "champions": champions,
                "live_updated_at": monitored["updated_at"],
                "decisions": decisions,
                "retraining": retraining,
                "pending": [
                    {"group": g.group, "topic": g.topic, "pending": g.pending} for g in backlog
                ],
                "dead_letters": [
                    {
                        "topic": d.source_topic,
                        "group": d.group,
                        "attempts": d.attempts,
                        "failed_at": d.failed_at,
                        "error": redact(d.error),
                    }
                    for d in letters
                ],
            }

            def tables() -> None:
                if fleet is not None:
                    _print_fleet(fleet)
                _print_status(champions, decisions, retraining, backlog, letters)

            emit(output, document, tables)
    finally:
        context.close()


def _print_fleet(fleet: dict[str, Any]) -> None:
    """The fleet's overview in a few lines, and where this page sits in it."""
    overview = fleet["overview"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(overview["states"].items()))
    types = ", ".join(f"{n} {kind}" for kind, n in sorted(overview["model_types"].items()))
    live = overview["live_nrmse"]
    oldest = overview["oldest_champion_seconds"]
    console.print(
        f"Fleet: {overview['stations']} stations, {overview['with_champion']} with a champion"
        f" ({types or 'none'}); {states or 'no stations'}"
    )
    console.print(
        f"Live NRMSE over {live['stations']} stations: median {_number(live['median'])}, "
        f"p90 {_number(live['p90'])}, max {_number(live['max'])}; oldest champion "
        + ("-" if oldest is None else f"{oldest / 86400:.1f} days")
    )
    first = fleet["offset"] + 1 if fleet["rows"] else 0
    last = fleet["offset"] + len(fleet["rows"])
    console.print(
        f"Showing {first}-{last} of {fleet['matched']} matching stations, by {fleet['sort']} "
        f"{fleet['order']}" + (" (--offset for more)" if last < fleet["matched"] else "")
    )


def _print_status(
    champions: list[dict[str, Any]],
    decisions: list[dict[str, Any]],
    retraining: list[dict[str, Any]],
    backlog: Any,
    letters: Any,
) -> None:
    from rich.table import Table

    table = Table(title="Champions")
    columns = ("identifier", "model", "run", "config", "eval NRMSE", "batch NRMSE")
    for name in (*columns, "live NRMSE", "live skill", "scored", "since"):
        table.add_column(name)
    for entry in champions:
        current = entry["champion"]
        if current is None:
            table.add_row(entry["identifier"], *["-"] * 8, "no champion yet")
            continue
        live = entry["live"][0] if entry["live"] else {}  # the shortest horizon step
        table.add_row(
            entry["identifier"],
            current["model_type"],
            current["run_id"],
            current["config_hash"][:12],
            _number(entry["evaluation_nrmse"]),
            _number(entry["batch_nrmse"]),
            _number(live.get("nrmse")) + (f" (step {live['step']})" if live else ""),
            _number(live.get("skill")),
            str(live.get("n", "-")),
            current["promoted_at"][:19],
        )
    console.print(table)

    evaluations = Table(title="Recent evaluations")
    for name in ("identifier", "config", "decided", "best", "NRMSE", "promoted"):
        evaluations.add_column(name)
    for decision in decisions:
        board: list[dict[str, Any]] = decision.get("leaderboard", [])
        best = board[0] if board else {}
        evaluations.add_row(
            str(decision.get("identifier")),
            str(decision.get("config_hash", ""))[:12],
            str(decision.get("decided_at", ""))[:19],
            str(best.get("model_type", "-")),
            _number(best.get("nrmse")),
            "yes" if decision.get("champion") else "no",
        )
    console.print(evaluations)

    triggers = Table(title="Retraining")
    columns = ("identifier", "requested", "reason", "evidence", "champion", "outcome")
    for name in (*columns, "promoted"):
        triggers.add_column(name)
    for trigger in retraining:
        outcome = trigger.get("outcome") or {}
        if outcome.get("status") == "prepared":
            result = f"dataset {outcome['dataset_id']} config {str(outcome['config_hash'])[:12]}"
        elif outcome.get("status") == "refused":
            result = f"refused: {redact(str(outcome.get('reason', '')))[:60]}"
        else:
            result = "waiting for preprocess"
        promoted = trigger.get("promoted")
        triggers.add_row(
            str(trigger.get("identifier")),
            str(trigger.get("requested_at", ""))[:19],
            str(trigger.get("reason")),
            _evidence(trigger),
            str(trigger.get("champion_run_id") or "-"),
            result,
            "-" if promoted is None else "yes" if promoted else "no",
        )
    console.print(triggers)

    pending = Table(title="Pending events")
    for name in ("group", "topic", "pending", "in flight"):
        pending.add_column(name)
    for lag in backlog:
        pending.add_row(lag.group, lag.topic, str(lag.pending), str(lag.in_flight))
    console.print(pending)

    dead = Table(title=f"Dead letters ({len(letters)} most recent)")
    for name in ("topic", "group", "attempts", "failed at", "error"):
        dead.add_column(name)
    for letter in letters:
        dead.add_row(
            letter.source_topic,
            letter.group,
            str(letter.attempts),
            letter.failed_at[:19],
            redact(letter.error)[:80],
        )
    console.print(dead)


def _cli_actor() -> str:
    """Who runs an operator command, for the promotion history: ``cli:<login name>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _evidence(trigger: dict[str, Any]) -> str:
    """The figures that matter of a trigger's evidence, in a few words."""
    evidence: dict[str, Any] = trigger.get("evidence") or {}
    if trigger.get("reason") == "drift":
        return (
            f"live/eval {_number(evidence.get('live_ratio'))} after "
            f"{evidence.get('rows_since_change', '-')} rows"
        )
    if trigger.get("reason") == "manual":
        return str(trigger.get("note") or evidence.get("requested_by") or "-")[:40]
    return ", ".join(f"{k} {v}" for k, v in sorted(evidence.items()))[:40] or "-"


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@app.command("promote")
def promote(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a trained model.")],
    reason: Annotated[str, typer.Option(help="Recorded in the history.")] = "manual promotion",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Make RUN_ID the champion of its identifier (recorded like automatic promotions)."""
    from flts.promotion import promote_run
    from flts.services.context import ServiceContext

    with user_errors():
        context = ServiceContext(load_settings())
        try:
            promotion = promote_run(context, run_id, reason=reason, actor=_cli_actor())
        finally:
            context.close()
    _print_promotion(promotion, output)


def _print_promotion(promotion: Promotion, output: OutputFormat) -> None:
    emit(
        output,
        promotion.model_dump(mode="json"),
        lambda: console.print(
            f"{promotion.identifier}: champion is now {promotion.model_type} run "
            f"{promotion.run_id} (was {promotion.previous_run_id})"
        ),
    )


@app.command("rollback")
def rollback(
    identifier: Annotated[str, typer.Option(help="Station or tenant.")] = "global",
    reason: Annotated[str, typer.Option(help="Recorded in the history.")] = "manual rollback",
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Restore the previous champion of IDENTIFIER."""
    from flts.promotion import rollback_champion
    from flts.services.context import ServiceContext

    with user_errors():
        context = ServiceContext(load_settings())
        try:
            promotion = rollback_champion(context, identifier, reason=reason, actor=_cli_actor())
        finally:
            context.close()
    _print_promotion(promotion, output)


@app.command("retrain")
def retrain(
    identifier: Annotated[str, typer.Option(help="Station or tenant to retrain.")],
    reason: Annotated[
        str | None, typer.Option(help="Why, in words: recorded with the request.")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Ask for a retraining of IDENTIFIER (a retrain-requested event): preprocess builds a
    training set from its stored observations and the pipeline trains, judges and swaps."""
    from pydantic import TypeAdapter, ValidationError

    from flts.events import Identifier, RetrainReason
    from flts.exceptions import DataValidationError, NotFoundError
    from flts.live.triggers import request_retrain
    from flts.promotion import PromotionStore
    from flts.services.context import ServiceContext

    with user_errors():
        try:
            TypeAdapter(Identifier).validate_python(identifier)
        except ValidationError as exc:
            raise DataValidationError(f"--identifier: {exc.errors()[0]['msg']}") from exc
        if reason is not None and len(reason) > 1000:
            raise DataValidationError("--reason is limited to 1000 characters")
        context = ServiceContext(load_settings())
        try:
            champion = PromotionStore(context.store).current(identifier)
            if champion is None:
                raise NotFoundError(
                    f"unknown identifier {identifier!r}: no model has been promoted for it; "
                    "upload its dataset first"
                )
            event = request_retrain(
                context.store,
                context.bus,
                identifier,
                RetrainReason.MANUAL,
                champion_run_id=champion.run_id,
                evidence={"requested_by": _cli_actor()},
                note=reason,
            )
        finally:
            context.close()
    emit(
        output,
        {
            "identifier": identifier,
            "event_id": event.event_id,
            "champion_run_id": champion.run_id,
            "reason": "manual",
            "note": reason,
        },
        lambda: console.print(
            f"{identifier}: retraining requested (event {event.event_id}, "
            f"champion {champion.run_id})"
        ),
    )
