"""Progress bars with an ETA for long commands (training epochs, pipeline stages, benchmark
runs), drawn on stderr only for a person watching: never when stderr is not a terminal, and
never when stdout carries a JSON document. Without a bar a command prints its plain progress
lines on stderr instead."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from flts.cli._common import OutputFormat, err_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def show_progress(output: OutputFormat = OutputFormat.TABLE) -> bool:
    """Bars only when stderr is a terminal and the output is for people."""
    return output is OutputFormat.TABLE and err_console.is_terminal


def progress_bar() -> Progress:
    """The one bar layout of the CLI: what, bar, done/total, elapsed, ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err_console,
    )


@contextmanager
def epoch_bars(progress: Progress) -> Iterator[None]:
    """A bar per torch model while it trains (its epochs out of ``max_epochs``, so the ETA
    is an upper bound: early stopping ends it sooner); removed when its training stops."""
    from flts.models.progress import EpochProgress, observe_epochs

    tasks: dict[str, TaskID] = {}

    def observe(update: EpochProgress) -> None:
        task = tasks.get(update.model_type)
        if update.finished:
            if task is not None:
                progress.remove_task(task)
                del tasks[update.model_type]
            return
        if task is None:
            task = tasks[update.model_type] = progress.add_task(
                f"  {update.model_type} epochs", total=update.max_epochs
            )
        nrmse = update.record.get("validation_nrmse", float("nan"))
        progress.update(
            task,
            completed=update.epoch,
            description=f"  {update.model_type} epochs (val NRMSE {nrmse:.4f})",
        )

    with observe_epochs(observe):
        yield
