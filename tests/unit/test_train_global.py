"""The GLOBAL trainer's coordination: a group's members become ready one event at a time,
the group trains once (even with two trainers), each member gets its own run and report;
late members, a group of one and redeliveries."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pytest

pytest.importorskip("torch")

from flts.bus import Bus
from flts.events import (
    MODEL_TRAINING,
    Event,
    ModelTrainingEvent,
    TrainingDataEvent,
    TrainingStatus,
)
from flts.fleet.groups import GroupManifest, write_group
from flts.models import load_model
from flts.models.global_mlp import GlobalForecaster
from flts.models.mlflow_pyfunc import flavors
from flts.services.context import ServiceContext
from flts.services.evaluate import EvaluateService
from flts.services.runner import build_service
from flts.services.train import TrainService
from flts.services.train_global import (
    GlobalTrainService,
    claim_key,
    outcome_key,
    ready_key,
    waiting_key,
)
from flts.settings import EvaluationSettings, Settings, TrainingSettings
from helpers import training_event, write_data

TINY: dict[str, Any] = {"hidden_size": 8, "num_layers": 1, "max_epochs": 2, "patience": 2}
STATIONS = ("s1", "s2", "s3")


def reports(bus: Bus) -> list[ModelTrainingEvent]:
    seen: list[Event] = []
    bus.consume(MODEL_TRAINING, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05)
    return [e for e in seen if isinstance(e, ModelTrainingEvent)]


def member_events(
    context: ServiceContext, group: str | None = "fleet", stations: tuple[str, ...] = STATIONS
) -> dict[str, TrainingDataEvent]:
    """One processed dataset and ``training-data`` event per station (with ``group``), and
    the group's manifest, as a bulk upload leaves them."""
    events = {}
    for seed, station in enumerate(stations, start=1):
        keys = write_data(context.store, f"{seed:02d}" * 8, seed=seed)
        event = training_event(keys, identifier=station)
        payload = event.payload.model_copy(update={"group": group})
        events[station] = event.model_copy(update={"payload": payload})
    if group is not None:
        write_group(
            context.store,
            GroupManifest(group=group, members={s: f"ds-{s}" for s in stations}),
        )
    return events


@pytest.fixture
def trainings(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The members of every group training (the real fit_group, counted)."""
    from flts.models import global_mlp

    calls: list[list[str]] = []
    real = global_mlp.fit_group

    def counted(members: Any, **kwargs: Any) -> Any:
        calls.append(sorted(members))
        return real(members, **kwargs)

    monkeypatch.setattr(global_mlp, "fit_group", counted)
    return calls


def successes(context: ServiceContext) -> dict[str, ModelTrainingEvent]:
    return {
        r.identifier: r
        for r in reports(context.bus)
        if r.payload.status is TrainingStatus.SUCCESS and r.payload.model_type == "GLOBAL"
    }


def test_the_runner_builds_the_global_trainer(context: ServiceContext) -> None:
    service = build_service("train", context, "global")
    assert isinstance(service, GlobalTrainService)
    assert service.group == "train-global"


def test_group_of_three_trains_once_across_two_trainers(
    context: ServiceContext, trainings: list[list[str]]
) -> None:
    events = member_events(context)
    first, second = (
        GlobalTrainService(context, params=TINY),
        GlobalTrainService(context, params=TINY),
    )
    first.handle(events["s1"])
    second.handle(events["s2"])
    assert trainings == []  # waiting for s3
    assert not [r for r in reports(context.bus) if r.payload.status is not TrainingStatus.RUNNING]
    second.handle(events["s3"])  # the last member: this trainer claims and trains the group
    first.handle(events["s3"])  # the same event delivered to the other trainer too
    first.handle(events["s1"])  # and a redelivery of a member already trained
    assert first.tick() == []
    assert second.tick() == []
    assert trainings == [list(STATIONS)]

    announced = successes(context)
    assert sorted(announced) == list(STATIONS)
    for station, event in events.items():
        [run] = [
            r
            for r in context.tracker.runs_for(
                config_hash=event.payload.config_hash, identifier=station
            )
            if r.model_type == "GLOBAL"
        ]
        assert run.finished
        assert announced[station].payload.run_id == run.run_id
        assert announced[station].config_hash == event.payload.config_hash
    outcome = context.store.get_json(outcome_key("fleet"))
    assert sorted(outcome["runs"]) == list(STATIONS)
    assert outcome["missing"] == []


def test_each_members_logged_model_is_its_own_station(context: ServiceContext) -> None:
    events = member_events(context, stations=("s1", "s2"))
    service = GlobalTrainService(context, params=TINY)
    for event in events.values():
        service.handle(event)
    indexes, forecasts = {}, {}
    for station, report in successes(context).items():
        assert report.payload.run_id is not None
        directory = context.tracker.model_dir(report.payload.run_id)
        model = load_model(directory)
        assert isinstance(model, GlobalForecaster)
        indexes[station] = (model.params["station_index"], model.params["stations"])
        # MLflow's pyfunc flavour serves it with no special case (and ONNX beside it).
        pyfunc = mlflow.pyfunc.load_model(str(directory))
        assert set(flavors(Path(directory))) == {"python_function", "onnx"}
        forecasts[station] = pyfunc.predict(pyfunc.input_example)
    assert indexes == {"s1": (0, 2), "s2": (1, 2)}
    assert not forecasts["s1"].equals(forecasts["s2"])


def test_wait_passes_then_late_member_fails(
    context: ServiceContext, trainings: list[list[str]]
) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    events = member_events(context)
    service = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    service.handle(events["s1"])
    service.handle(events["s2"])
    assert service.tick() == []
    now[0] += timedelta(seconds=context.settings.training.group_wait_seconds + 1)
    assert service.tick() == ["fleet"]
    assert trainings == [["s1", "s2"]]
    assert context.store.get_json(outcome_key("fleet"))["missing"] == ["s3"]
    service.handle(events["s3"])  # too late
    [failed] = [r for r in reports(context.bus) if r.payload.status is TrainingStatus.FAILED]
    assert failed.identifier == "s3"
    assert failed.payload.error is not None
    assert "after group fleet was claimed" in failed.payload.error
    assert sorted(successes(context)) == ["s1", "s2"]


def test_event_without_group_trains_a_group_of_one(
    context: ServiceContext, trainings: list[list[str]]
) -> None:
    [event] = member_events(context, group=None, stations=("solo",)).values()
    GlobalTrainService(context, params=TINY).handle(event)
    assert trainings == [["station"]]
    assert list(successes(context)) == ["solo"]
    assert not context.store.exists(claim_key("solo"))


def test_member_outside_its_manifest_fails(context: ServiceContext) -> None:
    events = member_events(context, stations=("s1",))
    stray = events["s1"].model_copy(update={"identifier": "other"})
    GlobalTrainService(context, params=TINY).handle(stray)
    [report] = [r for r in reports(context.bus) if r.payload.status is TrainingStatus.FAILED]
    assert report.identifier == "other"
    assert "does not list it" in (report.payload.error or "")


def failures(context: ServiceContext, station: str) -> list[ModelTrainingEvent]:
    return [
        r
        for r in reports(context.bus)
        if r.identifier == station and r.payload.status is TrainingStatus.FAILED
    ]


def failed_runs(context: ServiceContext, event: TrainingDataEvent) -> list[str]:
    return [
        r.run_id
        for r in context.tracker.runs_for(
            config_hash=event.payload.config_hash, identifier=event.identifier
        )
        if r.model_type == "GLOBAL" and r.status == "FAILED"
    ]


def test_member_ready_just_after_the_claimants_listing_is_reported_late(
    context: ServiceContext, trainings: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3's handler found no claim and writes its marker right after the claimant listed the
    ready members: the claimant's second listing reports it, and the handler's own second
    look (here: the rest of its handling, as a redelivery) does not log a second failure."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    events = member_events(context)
    claimant = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    claimant.handle(events["s1"])
    claimant.handle(events["s2"])
    now[0] += timedelta(seconds=context.settings.training.group_wait_seconds + 1)
    listing = claimant._ready

    def listed_then_s3_writes(manifest: GroupManifest) -> dict[str, TrainingDataEvent]:
        ready = listing(manifest)
        context.store.put_json(
            ready_key("fleet", "s3"),
            {"ready_at": now[0].isoformat(), "event": events["s3"].model_dump(mode="json")},
        )
        return ready

    monkeypatch.setattr(claimant, "_ready", listed_then_s3_writes)
    assert claimant.tick() == ["fleet"]
    assert trainings == [["s1", "s2"]]
    [late] = failures(context, "s3")
    assert "after group fleet was claimed" in (late.payload.error or "")
    [run_id] = failed_runs(context, events["s3"])
    assert late.payload.run_id == run_id

    GlobalTrainService(context, params=TINY).handle(events["s3"])  # the handler goes on
    assert failed_runs(context, events["s3"]) == [run_id]  # reported again, logged once
    assert {r.payload.run_id for r in failures(context, "s3")} == {run_id}
    assert sorted(successes(context)) == ["s1", "s2"]


def test_member_whose_marker_follows_the_claim_reports_itself_late(
    context: ServiceContext, trainings: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """s3's handler looks for a claim (none), the other trainer claims and trains the group
    without s3, then s3's marker is written: the handler looks again and reports it, and
    leaves no waiting marker behind for a group that is done."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    events = member_events(context)
    claimant = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    claimant.handle(events["s1"])
    claimant.handle(events["s2"])
    now[0] += timedelta(seconds=context.settings.training.group_wait_seconds + 1)
    late = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    looked = late._claim
    looks: list[dict[str, Any] | None] = []

    def claimed_just_after_the_look(group: str) -> dict[str, Any] | None:
        found = looked(group)
        if not looks:
            assert claimant.tick() == ["fleet"]
        looks.append(found)
        return found

    monkeypatch.setattr(late, "_claim", claimed_just_after_the_look)
    late.handle(events["s3"])
    assert looks[0] is None
    assert trainings == [["s1", "s2"]]
    [failed] = failures(context, "s3")
    assert "after group fleet was claimed" in (failed.payload.error or "")
    assert not context.store.exists(waiting_key("fleet"))
    assert sorted(successes(context)) == ["s1", "s2"]


def past_the_lease(settings: Settings) -> timedelta:
    """Longer than a claim's lease: the larger of the group wait and the evaluation deadline."""
    lease = max(settings.training.group_wait_seconds, settings.evaluation.deadline_seconds)
    return timedelta(seconds=lease + 1)


def outage_during_training(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch, *, store_down: bool
) -> list[bool]:
    """The group's fit raises an outage; with ``store_down`` the store then refuses every
    call too, until the returned flag is cleared."""
    from flts.exceptions import InfrastructureError
    from flts.models import global_mlp

    down = [False]
    store = context.store

    def outage(*_args: Any, **_kwargs: Any) -> Any:
        down[0] = store_down
        raise InfrastructureError("store unreachable")

    def unless_down(name: str) -> None:
        real = getattr(store, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if down[0]:
                raise InfrastructureError("store unreachable")
            return real(*args, **kwargs)

        monkeypatch.setattr(store, name, call)

    for name in ("get", "get_versioned", "put_if_match", "put_atomic", "put", "delete", "exists"):
        unless_down(name)
    monkeypatch.setattr(global_mlp, "fit_group", outage)
    return down


def test_an_outage_releases_the_claim(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.exceptions import InfrastructureError
    from flts.models import global_mlp

    real_fit = global_mlp.fit_group
    events = member_events(context, stations=("s1",))
    service = GlobalTrainService(context, params=TINY)
    outage_during_training(context, monkeypatch, store_down=False)
    with pytest.raises(InfrastructureError):
        service.handle(events["s1"])
    claim = context.store.get_json(claim_key("fleet"))
    assert claim["released_at"]
    assert claim["members"] == {"s1": events["s1"].payload.config_hash}
    monkeypatch.setattr(global_mlp, "fit_group", real_fit)
    service.handle(events["s1"])  # the bus's retry resumes the claim at once
    assert list(successes(context)) == ["s1"]
    assert "released_at" not in context.store.get_json(claim_key("fleet"))


def test_a_claim_the_outage_kept_is_resumed_after_its_lease(
    context: ServiceContext, trainings: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is down when the claim should be released: the claim stays, and once its
    lease has passed without a renewal another trainer resumes and trains the group."""
    from flts.exceptions import InfrastructureError
    from flts.models import global_mlp

    real_fit = global_mlp.fit_group
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    events = member_events(context, stations=("s1", "s2"))
    first = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    first.handle(events["s1"])
    down = outage_during_training(context, monkeypatch, store_down=True)
    with pytest.raises(InfrastructureError):
        first.handle(events["s2"])
    down[0] = False  # the store is back; the claim was never released
    monkeypatch.setattr(global_mlp, "fit_group", real_fit)
    claim = context.store.get_json(claim_key("fleet"))
    assert "released_at" not in claim
    other = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    assert other.tick() == []  # within the lease its holder may still be training
    assert trainings == []
    now[0] += past_the_lease(context.settings)
    assert other.tick() == ["fleet"]
    assert trainings == [["s1", "s2"]]
    assert sorted(successes(context)) == ["s1", "s2"]
    assert sorted(context.store.get_json(outcome_key("fleet"))["runs"]) == ["s1", "s2"]
    assert not context.store.exists(waiting_key("fleet"))
    assert claim["lease_seconds"] == past_the_lease(context.settings).total_seconds() - 1


def test_a_holder_whose_claim_was_resumed_stops(
    context: ServiceContext,
    trainings: list[list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A holder silent past its lease (stalled in the fit) is resumed by another trainer;
    when it wakes up it finds the claim not its own, says so and reports nothing: one run
    and one success per member, the resuming trainer's."""
    from flts.models import global_mlp

    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    events = member_events(context, stations=("s1", "s2"))
    stalled = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    other = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
    counted = global_mlp.fit_group
    stalls = [True]

    def stalls_once(members: Any, **kwargs: Any) -> Any:
        if stalls:  # the first fit: its lease runs out meanwhile
            stalls.pop()
            now[0] += past_the_lease(context.settings)
            assert other.tick() == ["fleet"]
        return counted(members, **kwargs)

    monkeypatch.setattr(global_mlp, "fit_group", stalls_once)
    stalled.handle(events["s1"])
    with caplog.at_level(logging.WARNING, logger="flts"):
        stalled.handle(events["s2"])
    assert trainings == [["s1", "s2"], ["s1", "s2"]]
    assert [getattr(r, "event", None) for r in caplog.records].count("group-claim-lost") == 1
    for event in events.values():
        runs = [
            r
            for r in context.tracker.runs_for(
                config_hash=event.payload.config_hash, identifier=event.identifier
            )
            if r.model_type == "GLOBAL"
        ]
        assert [r.status for r in runs] == ["FINISHED"]
    reported = [
        r.identifier
        for r in reports(context.bus)
        if r.payload.status is TrainingStatus.SUCCESS and r.payload.model_type == "GLOBAL"
    ]
    assert sorted(reported) == ["s1", "s2"]  # each once: the stalled holder reported none


def test_evaluator_waits_for_global_and_judges_it_per_station(
    settings: Settings, tmp_path: Path
) -> None:
    """Per-station candidates report first; the GLOBAL ones come after the group's wait,
    still inside the deadline, and are on each station's leaderboard."""
    evaluation = EvaluationSettings(
        expected_models=("PERSISTENCE", "RIDGE", "GLOBAL"), deadline_seconds=120
    )
    settings = settings.model_copy(
        update={"evaluation": evaluation, "training": TrainingSettings(group_wait_seconds=60)}
    )
    context = ServiceContext(settings)
    try:
        now = [datetime.now(UTC)]
        events = member_events(context, stations=("s1", "s2", "s3"))
        evaluator = EvaluateService(context, clock=lambda: now[0])
        for event in events.values():
            for model_type in ("PERSISTENCE", "RIDGE"):
                TrainService(context, model_type).handle(event)
        for report in reports(context.bus):
            evaluator.handle(report)
        assert evaluator.check_deadlines() == []  # waiting for GLOBAL
        service = GlobalTrainService(context, params=TINY, clock=lambda: now[0])
        service.handle(events["s1"])
        service.handle(events["s2"])  # s3's event never comes
        now[0] += timedelta(seconds=61)
        assert service.tick() == ["fleet"]
        for report in reports(context.bus):
            evaluator.handle(report)
        for station in ("s1", "s2"):
            decision = evaluator.decision(station, events[station].payload.config_hash)
            assert decision is not None
            assert not decision.deadline_passed
            board = {entry.model_type: entry for entry in decision.leaderboard}
            assert board["GLOBAL"].status == "SUCCESS"
            assert board["GLOBAL"].nrmse is not None
        assert evaluator.decision("s3", events["s3"].payload.config_hash) is None
        now[0] += timedelta(seconds=120)
        [decision] = evaluator.check_deadlines()  # s3 without GLOBAL, at its deadline
        assert decision.identifier == "s3"
        assert decision.deadline_passed
        board = {entry.model_type: entry for entry in decision.leaderboard}
        assert board["GLOBAL"].status == "MISSING"
    finally:
        context.close()


def test_settings_refuse_a_deadline_shorter_than_the_group_wait(settings: Settings) -> None:
    with pytest.raises(ValueError, match="group_wait_seconds"):
        Settings.model_validate(
            {
                **settings.model_dump(),
                "evaluation": {"expected_models": ["GLOBAL"], "deadline_seconds": 60},
                "training": {"group_wait_seconds": 600},
            }
        )


def test_two_replicas_on_the_embedded_backends_train_the_group_once(
    settings: Settings, tmp_path: Path, trainings: list[list[str]]
) -> None:
    """SQLite bus, file store, two trainer replicas in one consumer group (threads standing in
    for processes, each with its own connections): the members are shared between them, the
    group trains once and every member gets its SUCCESS."""
    import threading
    import time

    from flts.events import TRAINING_DATA
    from flts.services.runner import run_service

    embedded = Settings(home=tmp_path / "home", tracking_uri=settings.tracking.uri)
    assert embedded.bus.url.startswith("sqlite")
    assert embedded.storage.url.startswith("file")
    publisher = ServiceContext(embedded)
    stop = threading.Event()
    replicas = [ServiceContext(embedded) for _ in range(2)]
    threads = [
        threading.Thread(
            target=run_service,
            args=(GlobalTrainService(replica, params=TINY), replica, stop),
            kwargs={"poll_timeout": 0.1},
        )
        for replica in replicas
    ]
    try:
        events = member_events(publisher)
        for thread in threads:
            thread.start()
        for event in events.values():
            publisher.bus.publish(TRAINING_DATA, event)
        deadline = time.monotonic() + 240
        while len(successes(publisher)) < len(STATIONS) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        for context in (*replicas, publisher):
            context.close()
    assert trainings == [list(STATIONS)]
    reopened = ServiceContext(embedded)
    try:
        assert sorted(successes(reopened)) == list(STATIONS)
        assert sorted(reopened.store.get_json(outcome_key("fleet"))["runs"]) == list(STATIONS)
    finally:
        reopened.close()
