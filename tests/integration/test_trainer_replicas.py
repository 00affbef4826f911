"""Two replicas of one trainer scale it out by identifier on the embedded SQLite bus.

Replicas of a trainer share its consumer group (``train-<type>``), so each ``training-data``
event goes to one of them: a fleet's stations are split between the replicas, none is
trained twice, and each replica trains some (docs/deploy.md, "Scaling out trainers"). Real
components throughout: the SQLite bus, a ``file://`` store and MLflow on SQLite, each replica
with its own :class:`ServiceContext` (its own bus connection, as its own process would have).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections import Counter
from pathlib import Path

from flts.bus import open_bus
from flts.events import MODEL_TRAINING, TRAINING_DATA, Event, ModelTrainingEvent, TrainingStatus
from flts.services.context import ServiceContext
from flts.services.runner import run_service
from flts.services.train import TrainService
from flts.settings import Settings
from helpers import training_event, write_data

STATIONS = 6
MODEL = "PERSISTENCE"


class CountingTrainer(TrainService):
    """The real trainer, noting which stations this replica handled."""

    def __init__(self, context: ServiceContext, seen: list[str]) -> None:
        super().__init__(context, MODEL)
        self.seen = seen

    def handle(self, event: Event) -> None:
        self.seen.append(event.identifier)
        super().handle(event)


def successes(bus_url: str) -> list[ModelTrainingEvent]:
    bus = open_bus(bus_url)
    got: list[Event] = []
    try:
        bus.consume(MODEL_TRAINING, f"reader-{uuid.uuid4().hex[:8]}", got.append, max_idle=0.2)
    finally:
        bus.close()
    return [
        e
        for e in got
        if isinstance(e, ModelTrainingEvent) and e.payload.status is TrainingStatus.SUCCESS
    ]


def test_two_replicas_share_a_topic_without_duplicates(
    tmp_path: Path, mlflow_template: Path
) -> None:
    shutil.copy(mlflow_template, tmp_path / "mlflow.db")
    settings = Settings(
        home=tmp_path,
        bus_url=f"sqlite:///{tmp_path / 'bus.db'}?poll_interval=0.05",
        storage_url=(tmp_path / "store").as_uri(),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    producer = ServiceContext(settings)
    stations = [f"cell-{n:02d}" for n in range(STATIONS)]
    for number, station in enumerate(stations):
        keys = write_data(producer.store, f"{number:016x}", seed=number)
        producer.bus.publish(TRAINING_DATA, training_event(keys, identifier=station))

    stop = threading.Event()
    seen: list[list[str]] = [[], []]
    contexts = [ServiceContext(settings) for _ in seen]
    trainers = [CountingTrainer(c, s) for c, s in zip(contexts, seen, strict=True)]
    assert trainers[0].group == trainers[1].group  # one consumer group: replicas, not copies
    for context in contexts:  # connected before the first event, as a started process is
        assert context.tracker.experiment_id
    threads = [
        threading.Thread(target=run_service, args=(t, c, stop), kwargs={"poll_timeout": 0.05})
        for t, c in zip(trainers, contexts, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(600):  # up to a minute
            done = len(successes(settings.bus.url)) >= STATIONS
            if done and len(seen[0]) + len(seen[1]) >= STATIONS:
                break
            stop.wait(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for context in contexts:
            context.close()

    handled = Counter(seen[0] + seen[1])
    assert handled == Counter(stations), "every station handled by exactly one replica"
    assert all(seen), f"both replicas trained: {seen}"
    reported = Counter(e.identifier for e in successes(settings.bus.url))
    assert reported == Counter(stations)
    for number, station in enumerate(stations):
        runs = producer.tracker.runs_for(config_hash=f"{number:016x}", identifier=station)
        assert [r.model_type for r in runs if r.finished] == [MODEL]
    producer.close()
