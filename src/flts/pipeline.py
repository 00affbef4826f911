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


class _Services:
    """Every pipeline service as a thread of this process (preprocess, one trainer per model
    type, the evaluator), each on its own backend connections, plus the driver's own
    context; :meth:`watch` follows topics on another. Closed together by :meth:`close`."""

    def __init__(self, settings: Settings, models: Sequence[str]) -> None:
        evaluation = settings.evaluation.model_copy(update={"expected_models": tuple(models)})
        self.settings = settings.model_copy(update={"evaluation": evaluation})
        self.stop = threading.Event()
        self.contexts: list[ServiceContext] = []
        self.threads: list[threading.Thread] = []
        self.main = self._context()
        try:
            self._launch("preprocess")
            for model in models:
                self._launch("train", model)
            self._launch("evaluate")
        except BaseException:
            self.close()
            raise

    def _context(self) -> ServiceContext:
        context = ServiceContext(self.settings)
        self.contexts.append(context)
        return context

    def _launch(self, name: str, model: str | None = None) -> None:
        context = self._context()
        service = build_service(name, context, model)
        label = f"{name}-{model.lower()}" if model else name
        self.threads.append(_start(lambda: run_service(service, context, self.stop), label))

    def watch(self, group: str, handle: Callable[[Event], None]) -> None:
        """Follow the run's progress topics on consumer group ``group``."""
        context = self._context()
        self.threads.append(
            _start(
                lambda: context.bus.consume(
                    [TRAINING_DATA, MODEL_TRAINING, MODEL_SELECTED],
                    group,
                    handle,
                    stop=self.stop,
                    poll_timeout=0.2,
                ),
                "watcher",
            )
        )

    def check_alive(self) -> None:
        if not all(t.is_alive() for t in self.threads):
            raise PipelineError("a service stopped unexpectedly; see the log above")

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        for context in self.contexts:
            context.close()


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
    services = _Services(settings, models)
    main = services.main
    try:
        event, _ = ingest_dataset(
            main,
            train=train_csv,
            test=test_csv,
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
        services.watch(f"pipeline-{event.event_id}", watcher.handle)
        deadline = time.monotonic() + timeout
        if not watcher.seen_hash.wait(timeout):
            raise PipelineError(f"no training data was produced within {timeout:.0f}s")
        assert watcher.config_hash is not None
        while (decision := _decision(main, identifier, watcher.config_hash)) is None:
            if time.monotonic() > deadline:
                raise PipelineError(f"no evaluation decision within {timeout:.0f}s")
            services.check_alive()
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
        services.close()


@dataclass
class BulkPipelineResult:
    """One bulk upload's run: the group, each accepted station's result (in upload order)
    and the stations the upload rejected with their problems."""

    seconds: float
    group: str
    stations: list[PipelineResult]
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @property
    def promoted(self) -> int:
        """Stations that got a new champion."""
        return sum(result.champion is not None for result in self.stations)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 2),
            "group": self.group,
            "accepted": len(self.stations),
            "promoted": self.promoted,
            "stations": [result.to_json() for result in self.stations],
            "rejected": self.rejected,
        }


StationCallback = Callable[[PipelineResult], None]


class _FleetWatcher:
    """Maps each station's correlation id to the config hash preprocessing gave it."""

    def __init__(self, stations: dict[str, str]) -> None:
        self.stations = stations  # correlation id -> identifier
        self.hashes: dict[str, str] = {}  # identifier -> config hash
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        if isinstance(event, TrainingDataEvent):
            identifier = self.stations.get(event.correlation_id)
            if identifier is not None:
                with self._lock:
                    self.hashes[identifier] = event.payload.config_hash

    def known(self) -> dict[str, str]:
        with self._lock:
            return dict(self.hashes)


def run_bulk_pipeline(
    settings: Settings,
    *,
    train_csv: Path | Sequence[Path],
    test_csv: Path | Sequence[Path] | None = None,
    identifier_column: str | None = None,
    models: Sequence[str],
    progress: Progress,
    timeout: float = 3600.0,
    horizon: int | None = None,
    lags: int | None = None,
    on_upload: Callable[[int], None] | None = None,
    on_station: StationCallback | None = None,
) -> BulkPipelineResult:
    """Upload a bulk of stations (:mod:`flts.fleet.bulk`): one ``train_csv`` (and test CSV)
    split by ``identifier_column``, or several training files named by their stems with
    ``<stem>_test.csv`` test files; run every service until the evaluator has decided for
    every accepted station. ``progress`` gets a line per station, ``on_upload`` the number
    of accepted stations once they are announced, ``on_station`` each station's result as it
    is decided. Raises :class:`DataValidationError` when the upload has no acceptable station
    and :class:`PipelineError` when a station has no decision within ``timeout``."""
    from flts.fleet.bulk import BulkResult, ingest_bulk, ingest_bulk_csv, match_files

    started = time.perf_counter()
    trains = [train_csv] if isinstance(train_csv, Path) else list(train_csv)
    tests = [] if test_csv is None else [test_csv] if isinstance(test_csv, Path) else list(test_csv)
    services = _Services(settings, models)
    try:
        uploaded: BulkResult
        if identifier_column is not None:
            if len(trains) != 1 or len(tests) > 1:
                raise PipelineError(
                    "with an identifier column, give one training CSV (and at most one test CSV)"
                )
            uploaded = ingest_bulk_csv(
                services.main,
                train=trains[0],
                test=tests[0] if tests else None,
                identifier_column=identifier_column,
                train_filename=trains[0].name,
                test_filename=tests[0].name if tests else None,
                horizon=horizon,
                lags=lags,
            )
        else:
            stations = match_files(
                [(path.name, path) for path in trains], [(path.name, path) for path in tests]
            )
            uploaded = ingest_bulk(services.main, stations, horizon=horizon, lags=lags)
        order = [event.identifier for event in uploaded.events]
        progress(
            f"uploaded group {uploaded.group}: {len(order)} stations accepted, "
            f"{len(uploaded.rejected)} rejected"
        )
        for rejected in uploaded.rejected:
            progress(f"rejected {rejected.identifier}: {'; '.join(rejected.problems)}")
        if on_upload is not None:
            on_upload(len(order))
        watcher = _FleetWatcher({e.correlation_id: e.identifier for e in uploaded.events})
        services.watch(f"pipeline-{uploaded.group}", watcher.handle)
        results = _await_decisions(
            services, watcher, order, time.monotonic() + timeout, progress, on_station, started
        )
        return BulkPipelineResult(
            seconds=time.perf_counter() - started,
            group=uploaded.group,
            stations=[results[identifier] for identifier in order],
            rejected=[r.to_json() for r in uploaded.rejected],
        )
    finally:
        services.close()


def _await_decisions(
    services: _Services,
    watcher: _FleetWatcher,
    order: list[str],
    deadline: float,
    progress: Progress,
    on_station: StationCallback | None,
    started: float,
) -> dict[str, PipelineResult]:
    """Poll the decision of every station whose config hash is known until all are in."""
    results: dict[str, PipelineResult] = {}
    while len(results) < len(order):
        for identifier, config_hash in watcher.known().items():
            if identifier in results:
                continue
            decision = _decision(services.main, identifier, config_hash)
            if decision is None:
                continue
            result = results[identifier] = PipelineResult(
                seconds=time.perf_counter() - started,
                config_hash=config_hash,
                identifier=identifier,
                decision=decision,
                champion=decision.get("champion"),
                leaderboard=list(decision.get("leaderboard", [])),
            )
            champion = result.champion
            progress(
                f"{identifier}: "
                + (
                    f"promoted {champion.get('model_type')}"
                    if champion
                    else f"nothing promoted ({result.reason})"
                )
                + f" [{len(results)}/{len(order)}]"
            )
            if on_station is not None:
                on_station(result)
        if len(results) == len(order):
            break
        if time.monotonic() > deadline:
            waiting = [name for name in order if name not in results]
            raise PipelineError(
                f"no evaluation decision for {len(waiting)} of {len(order)} stations in time: "
                + ", ".join(waiting[:10])
                + (" ..." if len(waiting) > 10 else "")
            )
        services.check_alive()
        time.sleep(0.2)
    return results
