"""EvaluateService: waits for the expected models or a deadline, scores candidates itself on
the test split, promotes through the gate once, and resumes after a restart."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import helpers
from flts.bus import Bus
from flts.data import FeatureSpec, split
from flts.data.processed import ProcessedKeys, read_splits, write_processed
from flts.data.windows import Windows
from flts.evaluation import score
from flts.events import (
    MODEL_SELECTED,
    MODEL_TRAINING,
    Event,
    ModelSelectedEvent,
    ModelTrainingEvent,
    TrainingDataEvent,
    TrainingStatus,
)
from flts.models.base import Forecaster
from flts.promotion import (
    Decision,
    ReasonCode,
    champion_alias_run_id,
    decision_key,
    list_decisions,
    pending_key,
    promote_run,
    read_decision,
    rollback_champion,
)
from flts.services.context import ServiceContext
from flts.services.evaluate import EvaluateService
from flts.services.metrics import worker_metrics
from flts.services.train import TrainService
from flts.settings import EvaluationSettings, Settings
from flts.storage import ObjectStore
from flts.tracking import RunRecord, Tracker
from helpers import training_event

HASH_1 = "1111aaaa" * 2
HASH_2 = "2222bbbb" * 2
CHEAP = ("PERSISTENCE", "RIDGE", "SEASONAL_NAIVE")


class Clock:
    """A settable UTC clock, so deadline tests need no sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared per-test settings, waiting for the cheap models for at most a minute."""
    evaluation = EvaluationSettings(expected_models=CHEAP, deadline_seconds=60)
    return settings.model_copy(update={"evaluation": evaluation})


def write_data(store: ObjectStore, config_hash: str, seed: int) -> TrainingDataEvent:
    """Processed data as preprocessing leaves it, and the claim check announcing it."""
    return training_event(helpers.write_data(store, config_hash, seed=seed))


def events(bus: Bus, topic: str) -> list[Event]:
    """Everything published on ``topic`` so far (read by a fresh consumer group)."""
    seen: list[Event] = []
    bus.consume(topic, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05)
    return seen


def train(context: ServiceContext, data: TrainingDataEvent, model_type: str) -> ModelTrainingEvent:
    """Train one model type and return its final report (SUCCESS or FAILED)."""
    TrainService(context, model_type).handle(data)
    final = [
        e
        for e in events(context.bus, MODEL_TRAINING)
        if isinstance(e, ModelTrainingEvent)
        and e.payload.model_type == model_type
        and e.config_hash == data.config_hash
        and e.payload.status is not TrainingStatus.RUNNING
    ]
    return final[-1]


def selected(bus: Bus) -> list[ModelSelectedEvent]:
    return [e for e in events(bus, MODEL_SELECTED) if isinstance(e, ModelSelectedEvent)]


def test_waits_for_every_expected_model_then_promotes_the_best(context: ServiceContext) -> None:
    data = write_data(context.store, HASH_1, seed=7)
    evaluator = EvaluateService(context)

    for model_type in ("PERSISTENCE", "RIDGE"):
        evaluator.handle(train(context, data, model_type))
        assert read_decision(context.store, "global", HASH_1) is None  # still waiting
    assert context.store.exists(pending_key("global", HASH_1))
    assert context.promotions.current() is None
    assert selected(context.bus) == []

    evaluator.handle(train(context, data, "SEASONAL_NAIVE"))
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    assert decision.state == "done"
    assert not decision.deadline_passed
    assert not context.store.exists(pending_key("global", HASH_1))
    board = decision.leaderboard
    assert sorted(e.model_type for e in board) == sorted(CHEAP)
    assert [e.nrmse for e in board] == sorted(e.nrmse for e in board if e.nrmse is not None)
    winner = board[0]
    assert winner.promoted
    assert "beats persistence" in winner.reason
    assert decision.reason_code is ReasonCode.BEATS_BASELINE
    assert [e.promoted for e in board[1:]] == [False, False]
    assert decision.champion == {
        "run_id": winner.run_id,
        "model_type": winner.model_type,
        "nrmse": winner.nrmse,
    }
    assert decision.baseline["nrmse"] is not None
    assert winner.nrmse is not None
    assert winner.nrmse < decision.baseline["nrmse"]

    # Promotion: pointer(s), history, registry alias, event.
    pointer = context.promotions.current("global")
    assert pointer is not None
    assert pointer.run_id == winner.run_id
    assert pointer.previous_run_id is None
    assert pointer.scores["nrmse"] == winner.nrmse
    assert context.promotions.current_for_config("global", HASH_1) == pointer
    assert [h.run_id for h in context.promotions.history("global")] == [winner.run_id]
    assert champion_alias_run_id(context.tracker, "global") == winner.run_id
    [event] = selected(context.bus)
    assert (event.payload.run_id, event.payload.model_type) == (winner.run_id, winner.model_type)
    assert event.payload.previous_run_id is None
    assert event.payload.scores["nrmse"] == winner.nrmse
    assert event.payload.promoted_at == pointer.promoted_at
    assert (event.config_hash, event.correlation_id) == (HASH_1, "corr-1111")

    # The CLI's view of the same decision.
    [listed] = list_decisions(context.store)
    assert listed["champion"]["run_id"] == winner.run_id
    assert listed["leaderboard"][0]["model_type"] == winner.model_type


def test_scores_are_the_evaluators_own_on_the_test_split(context: ServiceContext) -> None:
    data = write_data(context.store, HASH_1, seed=7)
    reports = [train(context, data, m) for m in CHEAP]
    runs = {
        r.model_type: r for r in context.tracker.runs_for(config_hash=HASH_1, identifier="global")
    }
    # A trainer (or anyone) claiming a perfect score for the weakest model changes nothing.
    for name in ("validation_nrmse", "nrmse", "test_nrmse"):
        context.tracker.client.log_metric(runs["PERSISTENCE"].run_id, name, 1e-9)

    evaluator = EvaluateService(context)
    for report in reports:
        evaluator.handle(report)
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None

    prepared = read_splits(context.store, ProcessedKeys.for_hash(HASH_1)).windows()
    assert prepared.test is not None
    expected = {}
    for model_type, run in runs.items():
        model = context.tracker.load_model(run.run_id)
        truth = score(prepared.test.targets, model.predict(prepared.test), prepared.spec.targets)
        expected[model_type] = truth.nrmse
    board = {e.model_type: e for e in decision.leaderboard}
    for model_type, nrmse in expected.items():
        assert board[model_type].nrmse == pytest.approx(nrmse, rel=1e-12)
    assert decision.test_windows == len(prepared.test)
    assert decision.baseline["nrmse"] == pytest.approx(expected["PERSISTENCE"], rel=1e-12)
    assert decision.leaderboard[0].model_type == min(expected, key=lambda m: expected[m])
    assert board["PERSISTENCE"].nrmse != pytest.approx(1e-9)
    assert not board["PERSISTENCE"].promoted


def test_the_deadline_pass_leaves_a_waiting_hash_alone_for_a_tenth_of_the_deadline(
    settings: Settings,
) -> None:
    """A fleet's backlog of hashes waiting for models is not searched in the tracking store
    on every tick: each waiting hash is looked at again after a tenth of the deadline, and
    the deadline is still caught."""
    expected = EvaluationSettings(expected_models=("RIDGE", "GRU"), deadline_seconds=100)
    context = ServiceContext(settings.model_copy(update={"evaluation": expected}))
    clock = Clock()
    evaluator = EvaluateService(context, clock=clock)
    evaluator.handle(train(context, write_data(context.store, HASH_1, seed=7), "RIDGE"))
    clock.now = datetime.now(UTC)
    searched: list[str] = []
    search = context.tracker.runs_for

    def counting(**query: str) -> list[RunRecord]:
        searched.append(query["config_hash"])
        return search(**query)

    context.tracker.runs_for = counting  # type: ignore[method-assign]
    assert evaluator.check_deadlines() == []
    assert evaluator.check_deadlines() == []
    assert searched == [HASH_1]  # the second tick skipped it
    clock.advance(11)
    assert evaluator.check_deadlines() == []
    assert searched == [HASH_1, HASH_1]
    clock.advance(90)
    [decision] = evaluator.check_deadlines()
    assert decision.deadline_passed
    assert decision.missing_models == ["GRU"]


def test_deadline_scores_what_exists(settings: Settings) -> None:
    expected = EvaluationSettings(
        expected_models=("RIDGE", "PERSISTENCE", "GRU"), deadline_seconds=30
    )
    context = ServiceContext(settings.model_copy(update={"evaluation": expected}))
    clock = Clock()
    evaluator = EvaluateService(context, clock=clock)
    data = write_data(context.store, HASH_1, seed=7)
    for model_type in ("RIDGE", "PERSISTENCE"):
        evaluator.handle(train(context, data, model_type))
    clock.now = datetime.now(UTC)  # training took real time: the deadline counts from it
    assert evaluator.check_deadlines() == []  # GRU has 30 s left
    assert read_decision(context.store, "global", HASH_1) is None

    clock.advance(31)
    [decision] = evaluator.check_deadlines()
    assert decision.deadline_passed
    assert decision.missing_models == ["GRU"]
    board = {e.model_type: e for e in decision.leaderboard}
    assert board["GRU"].status == "MISSING"
    assert board["GRU"].run_id is None
    assert board["RIDGE"].promoted
    assert board["PERSISTENCE"].status == "SUCCESS"
    promoted = context.promotions.current()
    assert promoted is not None
    assert promoted.run_id == board["RIDGE"].run_id
    assert evaluator.check_deadlines() == []  # decided once
    context.close()


def test_restarted_evaluator_resumes_and_decides_once(settings: Settings) -> None:
    first = ServiceContext(settings)
    data = write_data(first.store, HASH_1, seed=7)
    evaluator = EvaluateService(first)
    evaluator.handle(train(first, data, "PERSISTENCE"))
    evaluator.handle(train(first, data, "RIDGE"))
    assert read_decision(first.store, "global", HASH_1) is None
    first.close()
    del evaluator  # the process dies mid-wait: nothing it held in memory survives

    second = ServiceContext(settings)  # same stores, new objects
    last = train(second, data, "SEASONAL_NAIVE")
    restarted = EvaluateService(second)
    restarted.handle(last)
    decision = restarted.decision("global", HASH_1)
    assert decision is not None
    assert decision.champion is not None
    assert sorted(e.model_type for e in decision.leaderboard) == sorted(CHEAP)

    # Duplicates and late reports change nothing: one decision, one promotion, one event.
    restarted.handle(last)
    EvaluateService(ServiceContext(settings)).handle(last)
    assert restarted.check_deadlines() == []
    assert len(second.promotions.history("global")) == 1
    assert len(selected(second.bus)) == 1
    assert restarted.decision("global", HASH_1) == decision
    second.close()


def test_restart_with_no_new_event_decides_from_the_pending_marker(settings: Settings) -> None:
    clock = Clock()
    first = ServiceContext(settings)
    data = write_data(first.store, HASH_1, seed=7)
    evaluator = EvaluateService(first, clock=clock)
    evaluator.handle(train(first, data, "RIDGE"))
    first.close()

    clock.advance(61)  # the other trainers never report
    restarted = EvaluateService(ServiceContext(settings), clock=clock)
    [decision] = restarted.check_deadlines()
    assert decision.deadline_passed
    assert sorted(decision.missing_models) == ["PERSISTENCE", "SEASONAL_NAIVE"]
    assert decision.leaderboard[0].model_type == "RIDGE"
    assert decision.leaderboard[0].promoted


def test_crash_during_promotion_is_finished_not_redecided(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = ServiceContext(settings)
    data = write_data(context.store, HASH_1, seed=7)
    reports = [train(context, data, m) for m in CHEAP]
    evaluator = EvaluateService(context)

    def crash(self: Tracker, run_id: str, identifier: str, alias: str) -> str:
        raise ConnectionError("tracking server went away")

    monkeypatch.setattr(Tracker, "set_alias", crash)
    with pytest.raises(ConnectionError):
        evaluator.handle(reports[0])  # every type has reported: it decides, then crashes
    half = read_decision(context.store, "global", HASH_1)
    assert half is not None
    assert half["state"] == "promoting"
    monkeypatch.undo()

    restarted = EvaluateService(ServiceContext(settings))
    restarted.handle(reports[-1])  # the bus redelivers the report
    done = restarted.decision("global", HASH_1)
    assert done is not None
    assert done.state == "done"
    assert done.promotion == Decision.model_validate(half).promotion  # same decision
    assert len(context.promotions.history("global")) == 1
    assert done.champion is not None
    assert champion_alias_run_id(context.tracker, "global") == done.champion["run_id"]
    assert [e.payload.run_id for e in selected(context.bus)] == [done.champion["run_id"]]
    context.close()


def test_candidate_not_better_than_the_champion_is_not_promoted(settings: Settings) -> None:
    expected = EvaluationSettings(
        expected_models=("PERSISTENCE", "RIDGE"), deadline_seconds=60, champion_margin=0.5
    )
    context = ServiceContext(settings.model_copy(update={"evaluation": expected}))
    evaluator = EvaluateService(context)
    first = write_data(context.store, HASH_1, seed=7)
    for model_type in ("PERSISTENCE", "RIDGE"):
        evaluator.handle(train(context, first, model_type))
    champion = context.promotions.current()
    assert champion is not None
    assert champion.model_type == "RIDGE"

    # New data, same feature spec: the champion is re-scored on the new test windows, and
    # the new ridge must beat it by 50 % - it cannot.
    rejections = worker_metrics().rejections.labels("global", "champion")
    before = rejections._value.get()
    second = write_data(context.store, HASH_2, seed=8)
    for model_type in ("PERSISTENCE", "RIDGE"):
        evaluator.handle(train(context, second, model_type))
    decision = evaluator.decision("global", HASH_2)
    assert decision is not None
    assert decision.reason_code is ReasonCode.CHAMPION_NOT_BEATEN
    assert rejections._value.get() == before + 1
    assert decision.champion is None
    assert decision.promotion is None
    best = decision.leaderboard[0]
    assert best.model_type == "RIDGE"
    assert not best.promoted
    assert "does not beat champion" in best.reason
    assert decision.previous_champion is not None
    assert decision.previous_champion["run_id"] == champion.run_id
    assert decision.previous_champion["rescored"] is True
    assert context.promotions.current() == champion
    assert champion_alias_run_id(context.tracker, "global") == champion.run_id
    assert len(selected(context.bus)) == 1
    assert context.store.exists(decision_key("global", HASH_2))
    context.close()


def test_failed_trainer_counts_as_reported(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.models.baselines import SeasonalNaive

    def explode(*args: object) -> None:
        raise RuntimeError("out of memory")

    data = write_data(context.store, HASH_1, seed=7)
    evaluator = EvaluateService(context)
    evaluator.handle(train(context, data, "PERSISTENCE"))
    evaluator.handle(train(context, data, "RIDGE"))
    monkeypatch.setattr(SeasonalNaive, "_fit", explode)
    failed = train(context, data, "SEASONAL_NAIVE")
    assert failed.payload.status is TrainingStatus.FAILED
    evaluator.handle(failed)  # no deadline needed: every expected type has reported

    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    assert not decision.deadline_passed
    board = {e.model_type: e for e in decision.leaderboard}
    assert board["SEASONAL_NAIVE"].status == "FAILED"
    assert "RuntimeError: out of memory" in board["SEASONAL_NAIVE"].reason
    assert board["RIDGE"].promoted


def test_no_scored_candidate_is_rejected_with_its_code(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.models.baselines import SeasonalNaive

    def explode(*args: object) -> None:
        raise RuntimeError("out of memory")

    expected = EvaluationSettings(expected_models=("SEASONAL_NAIVE",), deadline_seconds=60)
    context = ServiceContext(settings.model_copy(update={"evaluation": expected}))
    rejections = worker_metrics().rejections.labels("global", "no_candidate")
    before = rejections._value.get()
    monkeypatch.setattr(SeasonalNaive, "_fit", explode)
    data = write_data(context.store, HASH_1, seed=7)
    EvaluateService(context).handle(train(context, data, "SEASONAL_NAIVE"))

    decision = read_decision(context.store, "global", HASH_1)
    assert decision is not None
    assert decision["reason_code"] == "no_candidate"
    assert decision["champion"] is None
    assert rejections._value.get() == before + 1
    assert context.promotions.current() is None
    context.close()


def test_manual_promote_and_rollback_are_recorded_and_announced(
    context: ServiceContext,
) -> None:
    data = write_data(context.store, HASH_1, seed=7)
    evaluator = EvaluateService(context)
    reports = {m: train(context, data, m) for m in CHEAP}
    for report in reports.values():
        evaluator.handle(report)
    automatic = context.promotions.current()
    assert automatic is not None
    other = next(r for r in reports.values() if r.payload.run_id != automatic.run_id)
    assert other.payload.run_id is not None

    manual = promote_run(context, other.payload.run_id, reason="operator says so")
    assert (manual.action, manual.reason) == ("manual", "operator says so")
    assert manual.previous_run_id == automatic.run_id
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    [line] = [e for e in decision.leaderboard if e.run_id == manual.run_id]
    assert manual.scores == line.figures()  # the evaluator's figures, not the trainer's
    assert context.promotions.current() == manual
    assert champion_alias_run_id(context.tracker, "global") == manual.run_id

    rolled = rollback_champion(context, reason="bad night")
    assert (rolled.run_id, rolled.action, rolled.previous_run_id) == (
        automatic.run_id,
        "rollback",
        manual.run_id,
    )
    assert champion_alias_run_id(context.tracker, "global") == automatic.run_id
    history = context.promotions.history("global")
    assert [h.action for h in history] == ["promote", "manual", "rollback"]
    announced = [(e.payload.run_id, e.payload.previous_run_id) for e in selected(context.bus)]
    assert announced == [
        (automatic.run_id, None),
        (manual.run_id, automatic.run_id),
        (automatic.run_id, manual.run_id),
    ]


def write_horizon_data(store: ObjectStore, config_hash: str, horizon: int) -> TrainingDataEvent:
    """Processed data of a ``horizon``-step task (800 synthetic rows, the last 200 as test)."""
    spec = FeatureSpec(horizon=horizon)
    train_table, test_table = helpers.synthetic_tables(800, 600, seed=7, spec=spec)
    keys = write_processed(
        store,
        split(train_table, test_table, spec=spec),
        config_hash=config_hash,
        canonical_json="{}",
        input_digests={},
    )
    return training_event(keys)


def test_decision_record_carries_figures_per_horizon_step(context: ServiceContext) -> None:
    data = write_horizon_data(context.store, HASH_1, horizon=5)
    evaluator = EvaluateService(context)
    for model_type in CHEAP:
        evaluator.handle(train(context, data, model_type))
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    assert decision.interval_levels == [80.0, 95.0]

    prepared = read_splits(context.store, ProcessedKeys.for_hash(HASH_1)).windows()
    test = prepared.test
    assert test is not None
    targets = prepared.spec.targets
    traffic = [targets.index("down"), targets.index("up")]
    truth = test.targets
    naive = np.repeat(test.x[:, -1:, prepared.spec.target_positions], 5, axis=1)
    for entry in decision.leaderboard:
        assert sorted(entry.horizon) == [1, 5]
        model = context.tracker.load_model(entry.run_id or "")
        forecast = np.clip(model.predict(test), 0.0, None)
        for step, figures in entry.horizon.items():
            y, f = truth[:, step - 1], forecast[:, step - 1]
            rmse = np.sqrt(np.mean((f - y) ** 2, axis=0))
            mase = np.mean(np.abs(f - y), axis=0) / np.mean(np.abs(naive[:, step - 1] - y), axis=0)
            assert figures.nrmse == pytest.approx(np.mean((rmse / y.mean(axis=0))[traffic]))
            assert figures.mase == pytest.approx(np.mean(mase))
            assert set(figures.coverage) == set(figures.width) == {"80", "95"}
            assert 0.0 < figures.coverage["80"] < figures.coverage["95"] <= 1.0
        assert entry.wql is not None
    board = {e.model_type: e for e in decision.leaderboard}
    assert [board["PERSISTENCE"].horizon[s].mase for s in (1, 5)] == pytest.approx([1.0, 1.0])
    assert sorted(decision.baseline_horizon) == [1, 5]
    assert decision.baseline_horizon[5].nrmse == board["PERSISTENCE"].horizon[5].nrmse

    # The stored record is plain JSON keyed by step, and parses back to the same decision.
    document = read_decision(context.store, "global", HASH_1)
    assert document is not None
    assert set(document["leaderboard"][0]["horizon"]) == {"1", "5"}
    assert Decision.model_validate(document) == decision


def test_candidate_without_calibration_is_scored_without_interval_figures(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flts.models.intervals import IntervalCalibration

    data = write_horizon_data(context.store, HASH_1, horizon=5)
    reports = [train(context, data, m) for m in CHEAP]
    # Every model now loads as if saved before calibrations existed.
    monkeypatch.setattr(IntervalCalibration, "load", classmethod(lambda cls, directory: None))
    evaluator = EvaluateService(context)
    for report in reports:
        evaluator.handle(report)
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    assert [e.status for e in decision.leaderboard] == ["SUCCESS"] * 3
    for entry in decision.leaderboard:
        assert (entry.wql, entry.coverage, entry.width) == (None, {}, {})
        assert entry.mase is not None
        assert entry.horizon[5].coverage == {}
    # Persistence is fitted here, so the baseline still has its intervals.
    assert set(decision.baseline_horizon[5].coverage) == {"80", "95"}


def _patch_forecasts(monkeypatch: pytest.MonkeyPatch, *, runner_up: bool) -> None:
    """RIDGE perfect at steps 1-4 and half as bad again as persistence at step 5 (the best on
    average, worse at step 5); with ``runner_up``, SEASONAL_NAIVE at 80 % of persistence's
    error at every step (second on average, better everywhere)."""
    from flts.models.baselines import SeasonalNaive
    from flts.models.ridge import Ridge

    def blend(weights: list[float]) -> Callable[[Forecaster, Windows], np.ndarray]:
        """Every window here is a training, validation or test window: it has targets."""

        def predict(self: Forecaster, windows: Windows) -> np.ndarray:
            naive = windows.x[:, -1:, self.spec.target_positions]
            weight = np.asarray(weights)[None, :, None]
            return np.asarray(windows.targets + weight * (naive - windows.targets))

        return predict

    monkeypatch.setattr(Ridge, "_predict", blend([0, 0, 0, 0, 1.5]))
    if runner_up:
        monkeypatch.setattr(SeasonalNaive, "_predict", blend([0.8] * 5))


def test_best_on_average_but_worse_at_a_step_is_refused(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_horizon_data(context.store, HASH_1, horizon=5)
    reports = [train(context, data, m) for m in CHEAP]
    _patch_forecasts(monkeypatch, runner_up=False)
    rejections = worker_metrics().rejections.labels("global", "baseline_at_step")
    before = rejections._value.get()
    evaluator = EvaluateService(context)
    for report in reports:
        evaluator.handle(report)
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    best = decision.leaderboard[0]
    assert best.model_type == "RIDGE"
    assert best.nrmse is not None
    assert decision.baseline["nrmse"] is not None
    assert best.nrmse < decision.baseline["nrmse"]  # better than persistence overall
    assert not best.promoted
    assert "at step 5 is worse than persistence" in best.reason
    assert decision.reason_code is ReasonCode.BASELINE_AT_STEP
    assert rejections._value.get() == before + 1
    assert context.promotions.current() is None


def test_runner_up_that_wins_at_every_step_is_promoted(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_horizon_data(context.store, HASH_1, horizon=5)
    reports = [train(context, data, m) for m in CHEAP]
    _patch_forecasts(monkeypatch, runner_up=True)
    evaluator = EvaluateService(context)
    for report in reports:
        evaluator.handle(report)
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    assert [(e.model_type, e.promoted) for e in decision.leaderboard] == [
        ("RIDGE", False),
        ("SEASONAL_NAIVE", True),
        ("PERSISTENCE", False),
    ]
    assert "at step 5 is worse than persistence" in decision.leaderboard[0].reason
    assert decision.reason_code is ReasonCode.BEATS_BASELINE
    assert decision.leaderboard[2].reason.startswith("ranked 3 of 3: nrmse")
    pointer = context.promotions.current()
    assert pointer is not None
    assert pointer.model_type == "SEASONAL_NAIVE"


def _corrupt_artifact(context: ServiceContext, run_id: str) -> None:
    """Change one file of the run's stored model (still valid JSON: only its digest tells)."""
    from pathlib import Path
    from urllib.parse import urlparse

    uri = context.tracker.client.get_run(run_id).info.artifact_uri
    scaler = Path(urlparse(uri).path) / "model" / "target_scaler.json"
    scaler.write_bytes(scaler.read_bytes().replace(b"0", b"1", 1))


def test_candidate_with_a_corrupt_artifact_is_unscored_and_the_rest_decide(
    context: ServiceContext,
) -> None:
    data = write_data(context.store, HASH_1, seed=7)
    evaluator = EvaluateService(context)
    reports = {m: train(context, data, m) for m in CHEAP}
    _corrupt_artifact(context, str(reports["RIDGE"].payload.run_id))
    for report in reports.values():
        evaluator.handle(report)
    decision = evaluator.decision("global", HASH_1)
    assert decision is not None
    board = {e.model_type: e for e in decision.leaderboard}
    assert board["RIDGE"].status == "UNSCORED"
    assert "digest" in board["RIDGE"].reason
    assert {board["PERSISTENCE"].status, board["SEASONAL_NAIVE"].status} == {"SUCCESS"}


def test_champion_with_a_corrupt_artifact_does_not_block_later_decisions(
    context: ServiceContext,
) -> None:
    first = write_data(context.store, HASH_1, seed=7)
    evaluator = EvaluateService(context)
    for model_type in CHEAP:
        evaluator.handle(train(context, first, model_type))
    champion = context.promotions.current()
    assert champion is not None
    _corrupt_artifact(context, champion.run_id)
    shutil.rmtree(context.settings.home / "cache", ignore_errors=True)  # no good cached copy

    second = write_data(context.store, HASH_2, seed=8)
    for model_type in CHEAP:
        evaluator.handle(train(context, second, model_type))
    decision = evaluator.decision("global", HASH_2)
    assert decision is not None
    assert decision.state == "done"
    assert decision.previous_champion is not None
    assert decision.previous_champion["rescored"] is False
    assert "digest" in decision.previous_champion["reason"]


def test_champion_changed_while_promoting_is_judged_again(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer promotes between the judgment and the pointer write: the pointer is not
    overwritten blindly; the decision is judged again against the new champion and the next
    tick carries it out, with a history whose links are right."""
    data = write_data(context.store, HASH_1, seed=7)
    reports = {m: train(context, data, m) for m in CHEAP}
    evaluator = EvaluateService(context)
    judged = evaluator.judge.decide
    raced: list[str] = []

    def decide_then_race(*args: object, **kwargs: object) -> Decision:
        decision = judged(*args, **kwargs)  # type: ignore[arg-type]
        if not raced and decision.promotion is not None:  # an operator promotes meanwhile
            other = next(
                str(r.payload.run_id)
                for r in reports.values()
                if r.payload.run_id != decision.promotion.run_id
            )
            promote_run(context, other)
            raced.append(other)
        return decision

    monkeypatch.setattr(evaluator.judge, "decide", decide_then_race)
    for report in reports.values():
        evaluator.handle(report)
    assert raced
    evaluator.check_deadlines()  # carries out the new judgment if it promotes
    done = evaluator.decision("global", HASH_1)
    assert done is not None
    assert done.state == "done"
    assert done.previous_champion is not None
    assert done.previous_champion["run_id"] == raced[0]  # judged against the new champion
    assert not context.store.exists(pending_key("global", HASH_1))
    history = context.promotions.history()
    assert history[0].run_id == raced[0]
    if done.promotion is None:
        assert [h.action for h in history] == ["manual"]
    else:
        assert [h.action for h in history] == ["manual", "promote"]
        assert history[1].previous_run_id == raced[0]
    assert context.promotions.current() == history[-1]
