"""Training progress, for whoever watches: each epoch of a torch model is reported to the
registered observers (the CLI draws progress bars from them) and logged (services, whose
stderr is a log stream, show these lines instead of a bar).

Observers are process-wide, not per model, because the models are built deep inside the
services (``flts pipeline`` runs its trainers as threads of the CLI's process); an observer
must be quick and thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EpochProgress:
    """``epoch`` of at most ``max_epochs`` is done (``finished``: training stopped, early or
    at the last epoch); ``record`` has its losses and validation NRMSE."""

    model_type: str
    epoch: int
    max_epochs: int
    record: dict[str, float] = field(default_factory=dict)
    finished: bool = False


EpochObserver = Callable[[EpochProgress], None]

_observers: list[EpochObserver] = []
_lock = threading.Lock()


@contextmanager
def observe_epochs(observer: EpochObserver) -> Iterator[None]:
    """Call ``observer`` for every epoch any model trains inside the block."""
    with _lock:
        _observers.append(observer)
    try:
        yield
    finally:
        with _lock:
            _observers.remove(observer)


def report_epoch(progress: EpochProgress) -> None:
    """Tell every observer (a failing observer never fails the training)."""
    with _lock:
        observers = list(_observers)
    for observer in observers:
        # A progress display is never worth failing a training for.
        with suppress(Exception):
            observer(progress)
