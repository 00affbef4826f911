"""``flts pipeline``: one upload through the real bus and services to a decision.

The services run as threads of this process (each with its own backend connections), on the
configured backends, so the flow is exactly the distributed one: the upload is stored and
announced on ``dataset-uploaded``, preprocess publishes claim checks, one trainer per model
type trains in parallel, and the evaluator scores every candidate on the held-out test split
and promotes (or not). This module watches the run's events for progress and returns the
evaluator's leaderboard.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flts.events import (
    MODEL_SELECTED,
    MODEL_TRAINING,
    TRAINING_DATA,
    Event,
    ModelSelectedEvent,
    ModelTrainingEvent,
    TrainingDataEvent,
)
from flts.exceptions import InfrastructureError, PipelineError
from flts.services.context import ServiceContext
from flts.services.runner import build_service, run_service
from flts.settings import Settings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class StageUpdate:
    """One stage of a run moved: ``stage`` is ``upload``, ``preprocess``, ``train`` (with
    ``model_type``) or ``evaluate``; ``status`` is ``running``, ``done`` or ``failed``. For a
    progress display (the CLI's bars); ``message`` is the same line :data:`Progress` gets."""

    stage: str
    status: str
    message: str
    model_type: str | None = None


StageCallback = Callable[[StageUpdate], None]


@dataclass
class PipelineResult:
    seconds: float
    config_hash: str
    identifier: str
    decision: dict[str, Any]
    champion: dict[str, Any] | None = None
    leaderboard: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """Why the best candidate was or was not promoted: the gate's reason on the best
        line of the leaderboard, else the decision's reason code."""
        best = self.leaderboard[0] if self.leaderboard else {}
        return str(best.get("reason") or self.decision.get("reason_code") or "no candidate")

    def to_json(self) -> dict[str, Any]:
        """The result as JSON: leaderboard lines carry their figures per summary horizon step
        (``horizon``), pooled MASE, wQL, coverage and width, beside persistence's."""
        return {
            "seconds": round(self.seconds, 2),
            "config_hash": self.config_hash,
            "identifier": self.identifier,
            "champion": self.champion,
            "promoted": self.champion is not None,
            "reason_code": self.decision.get("reason_code"),
            "reason": self.reason,
            "interval_levels": self.decision.get("interval_levels", []),
            "baseline": self.decision.get("baseline", {}),
            "baseline_horizon": self.decision.get("baseline_horizon", {}),
            "leaderboard": self.leaderboard,
        }


class _Watcher:
    """Follows one correlation id's events on its own consumer group (progress output)."""

    def __init__(
        self, correlation_id: str, progress: Progress, on_stage: StageCallback | None = None
    ) -> None:
        self.correlation_id = correlation_id
        self.progress = progress
        self.on_stage = on_stage
        self.config_hash: str | None = None
        self.seen_hash = threading.Event()

    def handle(self, event: Event) -> None:
        if event.correlation_id != self.correlation_id:
            return
        if isinstance(event, TrainingDataEvent):
            self.config_hash = event.payload.config_hash
            self.seen_hash.set()
            self.say("preprocess", "done", f"preprocessed: config {event.payload.config_hash[:12]}")
        elif isinstance(event, ModelTrainingEvent):
            p = event.payload
            detail = {
                "RUNNING": "training",
                "SUCCESS": f"trained in {p.train_seconds or 0:.1f}s (run {p.run_id})",
                "FAILED": f"FAILED: {p.error}",
            }.get(p.status.value, p.status.value)
            status = {"RUNNING": "running", "SUCCESS": "done"}.get(p.status.value, "failed")
            self.say("train", status, f"{p.model_type:<15} {detail}", p.model_type)
        elif isinstance(event, ModelSelectedEvent):
            selected = event.payload
            nrmse = selected.scores.get("nrmse", float("nan"))
            self.say(
                "evaluate",
                "done",
                f"promoted {selected.model_type} run {selected.run_id} (NRMSE {nrmse:.4f})",
            )

    def say(self, stage: str, status: str, message: str, model_type: str | None = None) -> None:
        self.progress(message)
        if self.on_stage is not None:
            self.on_stage(StageUpdate(stage, status, message, model_type))


def _decision(context: ServiceContext, identifier: str, config_hash: str) -> dict[str, Any] | None:
    """The run's decision, or ``None`` while there is none or the store cannot be reached
    (the services wait an outage out; so does the driver, until its own timeout)."""
    from flts.promotion import read_decision

    try:
        return read_decision(context.store, identifier, config_hash)
    except InfrastructureError:
        return None


def _start(target: Callable[[], object], name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread


def run_pipeline(
    settings: Settings,
    *,
    train_csv: Path,
    test_csv: Path,
    identifier: str = "global",
    models: Sequence[str],
    progress: Progress,
    timeout: float = 1800.0,
    horizon: int | None = None,
    lags: int | None = None,
    on_stage: StageCallback | None = None,
) -> PipelineResult:
    """Upload ``train_csv``/``test_csv``, run every service until the evaluator decides;
    ``progress`` gets a line per step, ``on_stage`` the same steps as :class:`StageUpdate`."""
    from flts.services.gateway import ingest_dataset

    started = time.perf_counter()
    evaluation = settings.evaluation.model_copy(update={"expected_models": tuple(models)})
    settings = settings.model_copy(update={"evaluation": evaluation})
    stop = threading.Event()
    contexts: list[ServiceContext] = []
    threads: list[threading.Thread] = []

    def launch(name: str, model: str | None = None) -> None:
        context = ServiceContext(settings)
        contexts.append(context)
        service = build_service(name, context, model)
        label = f"{name}-{model.lower()}" if model else name
        threads.append(_start(lambda: run_service(service, context, stop), label))

    main = ServiceContext(settings)
    contexts.append(main)
    try:
        launch("preprocess")
        for model in models:
            launch("train", model)
        launch("evaluate")

        event, _ = ingest_dataset(
            main,
            train=train_csv.read_bytes(),
            test=test_csv.read_bytes(),
            identifier=identifier,
            train_filename=train_csv.name,
            test_filename=test_csv.name,
            horizon=horizon,
            lags=lags,
        )
        watcher = _Watcher(event.correlation_id, progress, on_stage)
        watcher.say(
            "upload",
            "done",
            f"uploaded {train_csv.name} + {test_csv.name} as {event.payload.dataset_id}",
        )
        watch_context = ServiceContext(settings)
        contexts.append(watch_context)
        threads.append(
            _start(
                lambda: watch_context.bus.consume(
                    [TRAINING_DATA, MODEL_TRAINING, MODEL_SELECTED],
                    f"pipeline-{event.event_id}",
                    watcher.handle,
                    stop=stop,
                    poll_timeout=0.2,
                ),
                "watcher",
            )
        )
        deadline = time.monotonic() + timeout
        if not watcher.seen_hash.wait(timeout):
            raise PipelineError(f"no training data was produced within {timeout:.0f}s")
        assert watcher.config_hash is not None
        while (decision := _decision(main, identifier, watcher.config_hash)) is None:
            if time.monotonic() > deadline:
                raise PipelineError(f"no evaluation decision within {timeout:.0f}s")
            if not all(t.is_alive() for t in threads):
                raise PipelineError("a service stopped unexpectedly; see the log above")
            time.sleep(0.2)
        if on_stage is not None and decision.get("champion") is None:
            on_stage(StageUpdate("evaluate", "done", "evaluated: nothing promoted"))
        return PipelineResult(
            seconds=time.perf_counter() - started,
            config_hash=watcher.config_hash,
            identifier=identifier,
            decision=decision,
            champion=decision.get("champion"),
            leaderboard=list(decision.get("leaderboard", [])),
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for context in contexts:
            context.close()
