"""What a person finds in MLflow: model cards on registry versions, per-epoch curves and the
evaluator's test figures on the runs, and a ``champion`` alias moved by hand either promoted
(recorded in the history with the caller ``mlflow-registry``) or refused and put back."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest

import helpers
from flts.events import MODEL_SELECTED, MODEL_TRAINING, Event, ModelSelectedEvent
from flts.exceptions import InfrastructureError
from flts.model_card import EVALUATION_HEADING, with_evaluation
from flts.promotion import CHAMPION_ALIAS, champion_alias_run_id, promote_run
from flts.promotion.registry import REGISTRY_ACTOR, alias_moved, unconfirmed_aliases
from flts.promotion.report import FIGURE_PATH
from flts.services.context import ServiceContext
from flts.services.evaluate import EvaluateService
from flts.services.train import TrainService
from flts.settings import EvaluationSettings, Settings

HASH = "7c7c7c7c" * 2
CHEAP = ("PERSISTENCE", "RIDGE")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    evaluation = EvaluationSettings(expected_models=CHEAP, deadline_seconds=60)
    return settings.model_copy(update={"evaluation": evaluation})


def reports(context: ServiceContext) -> list[Event]:
    seen: list[Event] = []
    context.bus.consume(
        MODEL_TRAINING, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05
    )
    return seen


def train_all(
    context: ServiceContext, types: tuple[str, ...], params: dict[str, dict[str, Any]] | None = None
) -> dict[str, str]:
    """Train ``types`` on one config through the trainer; run id per type."""
    data = helpers.training_event(helpers.write_data(context.store, HASH, seed=7))
    for model_type in types:
        TrainService(context, model_type, params=(params or {}).get(model_type)).handle(data)
    runs = context.tracker.runs_for(config_hash=HASH, identifier="global")
    return {r.model_type: r.run_id for r in runs if r.finished}


def decide(context: ServiceContext) -> EvaluateService:
    evaluator = EvaluateService(context)
    evaluator.handle(reports(context)[-1])
    return evaluator


def test_trainer_registers_a_version_with_its_card_and_epoch_curves(
    context: ServiceContext,
) -> None:
    runs = train_all(context, ("LSTM",), {"LSTM": {"hidden_size": 8, "max_epochs": 2}})
    run_id = runs["LSTM"]
    card = context.tracker.version_description(run_id, "global")
    assert card is not None
    for expected in ("## Data", "## Spec", "## Recipe", "## Validation", "## Lineage"):
        assert expected in card
    assert f"run: `{run_id}`" in card
    assert f"config hash: `{HASH}`" in card
    assert "lags 10, horizon 1" in card
    assert "champion when trained: `none`" in card
    client = context.tracker.client
    for name in ("epoch_train_loss", "epoch_validation_loss", "epoch_validation_nrmse"):
        history = client.get_metric_history(run_id, name)
        assert sorted(m.step for m in history) == [1, 2]


def test_evaluator_logs_test_metrics_per_step_a_figure_and_the_card(
    context: ServiceContext,
) -> None:
    runs = train_all(context, CHEAP)
    evaluator = decide(context)
    decision = evaluator.decision("global", HASH)
    assert decision is not None
    client = context.tracker.client
    for entry in decision.leaderboard:
        assert entry.run_id is not None
        metrics = client.get_run(entry.run_id).data.metrics
        assert metrics["test_nrmse"] == pytest.approx(entry.nrmse)
        assert metrics["test_mae5"] == pytest.approx(entry.mae5)
        for step, figures in entry.horizon.items():
            assert metrics[f"test_nrmse_h{step}"] == pytest.approx(figures.nrmse)
            assert metrics[f"test_mae5_h{step}"] == pytest.approx(figures.mae5)
        artifacts = [a.path for a in client.list_artifacts(entry.run_id, "evaluation")]
        assert FIGURE_PATH in artifacts
        card = context.tracker.version_description(entry.run_id, "global")
        assert card is not None
        assert card.count(EVALUATION_HEADING) == 1
        assert "## Lineage" in card  # the trainer's part stays
        verdict = "decision: promoted" if entry.promoted else "decision: not promoted"
        assert verdict in card
    assert set(runs.values()) == {e.run_id for e in decision.leaderboard}


def test_rewriting_the_evaluation_keeps_one_section() -> None:
    card = "# RIDGE\n\n## Lineage\n- run: `r`"
    once = with_evaluation(card, f"{EVALUATION_HEADING}\n- test: 1")
    twice = with_evaluation(once, f"{EVALUATION_HEADING}\n- test: 2")
    assert twice.count(EVALUATION_HEADING) == 1
    assert twice.startswith(card)
    assert twice.endswith("- test: 2")


def selected(context: ServiceContext) -> list[ModelSelectedEvent]:
    seen: list[Event] = []
    context.bus.consume(
        MODEL_SELECTED, f"reader-{uuid.uuid4().hex[:8]}", seen.append, max_idle=0.05
    )
    return [e for e in seen if isinstance(e, ModelSelectedEvent)]


def test_alias_moved_by_hand_is_a_recorded_promotion(context: ServiceContext) -> None:
    runs = train_all(context, CHEAP)
    evaluator = decide(context)
    champion = context.promotions.current("global")
    assert champion is not None
    other = next(r for r in runs.values() if r != champion.run_id)
    assert evaluator.sync_registry() == []  # alias and pointer agree: nothing to do

    name = context.tracker.registered_model_name("global")
    version = context.tracker.register_version(other, "global")
    context.tracker.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)

    [promotion] = evaluator.sync_registry()
    assert promotion.run_id == other
    assert promotion.actor == REGISTRY_ACTOR
    assert promotion.action == "manual"
    assert promotion.previous_run_id == champion.run_id
    current = context.promotions.current("global")
    assert current is not None
    assert current.run_id == other
    last = context.promotions.history("global")[-1]
    assert (last.run_id, last.actor) == (other, REGISTRY_ACTOR)
    assert selected(context)[-1].payload.run_id == other
    assert evaluator.sync_registry() == []  # honoured once


def test_alias_moved_to_a_failed_run_is_refused_and_put_back(
    context: ServiceContext, caplog: pytest.LogCaptureFixture
) -> None:
    train_all(context, CHEAP)
    evaluator = decide(context)
    champion = context.promotions.current("global")
    assert champion is not None
    failed = context.tracker.log_failed_run(
        model_type="LSTM",
        identifier="global",
        config_hash=HASH,
        correlation_id="c",
        error="boom",
    )
    name = context.tracker.registered_model_name("global")
    version = context.tracker.register_version(failed, "global")
    context.tracker.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)

    with caplog.at_level(logging.WARNING, logger="flts.promotion.manual"):
        assert evaluator.sync_registry() == []
    assert "refused" in caplog.text
    assert "FAILED, not a trained model" in caplog.text
    assert champion_alias_run_id(context.tracker, "global") == champion.run_id
    current = context.promotions.current("global")
    assert current is not None
    assert current.run_id == champion.run_id
    assert len(context.promotions.history("global")) == 1


def test_an_alias_lagging_our_own_promotion_is_not_a_move(context: ServiceContext) -> None:
    """A rollback or promotion has written the pointer and not yet the alias: the alias
    still names the run FLTS last set, so it is not mistaken for a person's move."""
    runs = train_all(context, CHEAP)
    decide(context)
    champion = context.promotions.current("global")
    assert champion is not None
    other = next(r for r in runs.values() if r != champion.run_id)
    assert alias_moved(context.tracker, "global", other) is None
    promote_run(context, other, actor="test")
    assert alias_moved(context.tracker, "global", other) is None


def test_the_deadline_tick_follows_the_registry_every_sync_interval(
    context: ServiceContext,
) -> None:
    runs = train_all(context, CHEAP)
    evaluator = decide(context)
    champion = context.promotions.current("global")
    assert champion is not None
    other = next(r for r in runs.values() if r != champion.run_id)
    name = context.tracker.registered_model_name("global")
    version = context.tracker.register_version(other, "global")
    context.tracker.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)

    off = context.settings.evaluation.model_copy(update={"registry_sync_seconds": 0.0})
    evaluator.settings = off
    evaluator.check_deadlines()
    current = context.promotions.current("global")
    assert current is not None
    assert current.run_id == champion.run_id  # turned off: the move waits

    evaluator.settings = off.model_copy(update={"registry_sync_seconds": 30.0})
    evaluator.check_deadlines()
    current = context.promotions.current("global")
    assert current is not None
    assert current.run_id == other


def test_a_tracking_outage_while_reporting_is_waited_out_then_reported(
    context: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report goes before the decision is recorded: an outage propagates (the consume
    loop waits it out), nothing is decided on a half-written report, and the retry reports."""
    train_all(context, CHEAP)
    last = reports(context)[-1]
    tracker = context.tracker
    working = tracker.log_evaluation

    def down(*args: Any, **kwargs: Any) -> None:
        raise InfrastructureError("tracking server: connection refused")

    monkeypatch.setattr(tracker, "log_evaluation", down)
    evaluator = EvaluateService(context)
    with pytest.raises(InfrastructureError):
        evaluator.handle(last)
    assert evaluator.decision("global", HASH) is None
    assert context.promotions.current("global") is None

    monkeypatch.setattr(tracker, "log_evaluation", working)
    evaluator.handle(last)
    decision = evaluator.decision("global", HASH)
    assert decision is not None
    for entry in decision.leaderboard:
        assert entry.run_id is not None
        metrics = tracker.client.get_run(entry.run_id).data.metrics
        assert metrics["test_nrmse"] == pytest.approx(entry.nrmse)


def test_one_listing_finds_only_aliases_not_where_flts_put_them(context: ServiceContext) -> None:
    """The registry sweep's pre-filter: after FLTS's own promotion the alias is at the
    version it wrote; a hand move makes the identifier a suspect; a station without a
    champion is none."""
    runs = train_all(context, CHEAP)
    decide(context)
    champion = context.promotions.current("global")
    assert champion is not None
    context.tracker.register_version(runs["RIDGE"], "other-station")  # registered, no alias
    states = context.tracker.alias_states(CHAMPION_ALIAS)
    assert set(states) == {"global", "other-station"}
    assert states["global"].as_written
    assert states["other-station"].version is None
    assert unconfirmed_aliases(context.tracker) == []

    other = next(r for r in runs.values() if r != champion.run_id)
    name = context.tracker.registered_model_name("global")
    version = context.tracker.register_version(other, "global")
    context.tracker.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    assert unconfirmed_aliases(context.tracker) == ["global"]


def test_editing_a_card_reads_and_writes_the_one_version(context: ServiceContext) -> None:
    runs = train_all(context, ("RIDGE",))
    run_id = runs["RIDGE"]
    card = context.tracker.version_description(run_id, "global")
    assert card is not None
    seen: list[str | None] = []

    def edit(current: str | None) -> str:
        seen.append(current)
        return with_evaluation(current, f"{EVALUATION_HEADING}\n\nscored")

    version = context.tracker.edit_version_description(run_id, "global", edit)
    assert seen == [card]  # the trainer's card, as registered
    assert version == context.tracker.register_version(run_id, "global")
    updated = context.tracker.version_description(run_id, "global")
    assert updated == with_evaluation(card, f"{EVALUATION_HEADING}\n\nscored")
    name = context.tracker.registered_model_name("global")
    assert len(context.tracker.client.search_model_versions(f"name='{name}'")) == 1
