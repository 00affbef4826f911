"""Operator commands: ``flts status``, ``flts promote``, ``flts rollback``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from flts.cli._common import console, load_settings, user_errors
from flts.redaction import redact

app = typer.Typer()


@app.command("status")
def status(
    identifier: Annotated[str | None, typer.Option(help="Only this station or tenant.")] = None,
) -> None:
    """Champion per identifier with its evaluation and live error, recent decisions, pending
    events and dead letters."""
    from flts.promotion import list_decisions
    from flts.services.batch_inference import latest_live_scores
    from flts.services.context import ServiceContext

    with user_errors():
        context = ServiceContext(load_settings())
    try:
        with user_errors():
            identifiers = [identifier] if identifier else context.promotions.identifiers()
            champions = Table(title="Champions")
            for name in (
                "identifier",
                "model",
                "run",
                "config",
                "eval NRMSE",
                "live NRMSE",
                "since",
            ):
                champions.add_column(name)
            for name in identifiers:
                current = context.promotions.current(name)
                if current is None:
                    champions.add_row(name, "-", "-", "-", "-", "-", "no champion yet")
                    continue
                live = latest_live_scores(context.store, name) or {}
                champions.add_row(
                    name,
                    current.model_type,
                    current.run_id,
                    current.config_hash[:12],
                    _number(current.scores.get("nrmse")),
                    _number((live.get("scores") or {}).get("nrmse")),
                    current.promoted_at.isoformat(timespec="seconds"),
                )
            console.print(champions)

            decisions = Table(title="Recent evaluations")
            for name in ("identifier", "config", "decided", "best", "NRMSE", "promoted"):
                decisions.add_column(name)
            for decision in list_decisions(context.store, identifier)[-10:]:
                board: list[dict[str, Any]] = decision.get("leaderboard", [])
                best = board[0] if board else {}
                decisions.add_row(
                    str(decision.get("identifier")),
                    str(decision.get("config_hash", ""))[:12],
                    str(decision.get("decided_at", ""))[:19],
                    str(best.get("model_type", "-")),
                    _number(best.get("nrmse")),
                    "yes" if decision.get("champion") else "no",
                )
            console.print(decisions)

            backlog = Table(title="Pending events")
            for name in ("group", "topic", "pending", "in flight"):
                backlog.add_column(name)
            for lag in context.bus.lag():
                if lag.pending:
                    backlog.add_row(lag.group, lag.topic, str(lag.pending), str(lag.in_flight))
            console.print(backlog)

            letters = context.bus.dead_letters(limit=10)
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
    finally:
        context.close()


def _cli_actor() -> str:
    """Who runs an operator command, for the promotion history: ``cli:<login name>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "cli"


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


@app.command("promote")
def promote(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a trained model.")],
    reason: Annotated[str, typer.Option(help="Recorded in the history.")] = "manual promotion",
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
    console.print(
        f"{promotion.identifier}: champion is now {promotion.model_type} run {promotion.run_id} "
        f"(was {promotion.previous_run_id})"
    )


@app.command("rollback")
def rollback(
    identifier: Annotated[str, typer.Option(help="Station or tenant.")] = "global",
    reason: Annotated[str, typer.Option(help="Recorded in the history.")] = "manual rollback",
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
    console.print(
        f"{identifier}: champion is now {promotion.model_type} run {promotion.run_id} "
        f"(was {promotion.previous_run_id})"
    )
