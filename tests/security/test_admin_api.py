"""The gateway's admin API: promote, rollback and history through the real promotion code
(MLflow on SQLite, the memory bus), with the calling key's name recorded in the history."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flts.data import FeatureSpec, prepare, validate_frame
from flts.data.synthetic import synthetic_traffic
from flts.events import MODEL_SELECTED, Event, ModelSelected
from flts.models import model_class
from flts.promotion import CHAMPION_ALIAS
from flts.services.context import ServiceContext
from flts.services.gateway import create_gateway_app
from helpers import memory_settings

from .support import AsgiClient, Keys, make_keys

CONFIG_HASH = "0123456789abcdef"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[AsgiClient, ServiceContext, Keys, list[str]]]:
    keys = make_keys(tmp_path)
    context = ServiceContext(memory_settings(tmp_path, security={"keys_file": keys.path}))
    spec = FeatureSpec()
    prepared = prepare(validate_frame(synthetic_traffic(400, seed=4), spec), spec=spec)
    runs = []
    for _ in range(2):
        model = model_class("PERSISTENCE")(spec, prepared.input_scaler, prepared.target_scaler)
        model.fit(prepared.train, prepared.validation)
        runs.append(
            context.tracker.log_training_run(
                model,
                identifier="Station1",
                config_hash=CONFIG_HASH,
                correlation_id=str(uuid.uuid4()),
            )
        )
    yield AsgiClient(create_gateway_app(context)), context, keys, runs
    context.close()


def _selected(context: ServiceContext) -> list[Event]:
    events: list[Event] = []
    context.bus.consume(MODEL_SELECTED, f"probe-{uuid.uuid4().hex}", events.append, max_idle=0.2)
    return events


def test_promote_rollback_and_history_record_the_caller(
    system: tuple[AsgiClient, ServiceContext, Keys, list[str]],
) -> None:
    client, context, keys, (first, second) = system
    admin = keys.header(keys.admin)
    for run_id in (first, second):
        answer = client.request(
            "POST", "/v1/admin/promote", headers=admin, json={"run_id": run_id, "reason": "r"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["run_id"] == run_id
        assert answer.json()["actor"] == "admin-holder"
    assert context.promotions.current("Station1").run_id == second  # type: ignore[union-attr]

    back = client.request(
        "POST", "/v1/admin/rollback", headers=admin, json={"identifier": "Station1"}
    )
    assert back.status_code == 200, back.text
    assert back.json()["run_id"] == first
    assert back.json()["action"] == "rollback"
    assert context.tracker.alias_run_id("Station1", CHAMPION_ALIAS) == first
    announced = [e.payload for e in _selected(context)]
    assert [p.run_id for p in announced if isinstance(p, ModelSelected)] == [first, second, first]

    history = client.request(
        "GET", "/v1/admin/history", params={"identifier": "Station1"}, headers=admin
    )
    assert history.status_code == 200
    document = history.json()
    assert document["current"]["run_id"] == first
    entries = document["history"]
    assert [(e["run_id"], e["action"], e["actor"]) for e in entries] == [
        (first, "manual", "admin-holder"),
        (second, "manual", "admin-holder"),
        (first, "rollback", "admin-holder"),
    ]
    assert entries[1]["previous_run_id"] == first
    # What the store holds is what the API showed: the actor is in the durable history.
    stored = context.promotions.history("Station1")
    assert [p.actor for p in stored] == ["admin-holder"] * 3


def test_admin_api_mistakes_are_4xx_and_change_nothing(
    system: tuple[AsgiClient, ServiceContext, Keys, list[str]],
) -> None:
    client, context, keys, (first, _) = system
    admin = keys.header(keys.admin)
    unknown = client.request("POST", "/v1/admin/promote", headers=admin, json={"run_id": "nope"})
    assert unknown.status_code == 422
    assert "no tracking run" in unknown.json()["detail"]
    bad = client.request("POST", "/v1/admin/promote", headers=admin, content=b"{not json")
    assert bad.status_code == 422
    extra = client.request(
        "POST", "/v1/admin/promote", headers=admin, json={"run_id": first, "who": "me"}
    )
    assert extra.status_code == 422
    nothing = client.request("POST", "/v1/admin/rollback", headers=admin, json={})
    assert nothing.status_code == 422
    assert "nothing to roll back" in nothing.json()["detail"]
    badid = client.request("GET", "/v1/admin/history", params={"identifier": "../x"}, headers=admin)
    assert badid.status_code == 422
    # An upload key cannot promote.
    refused = client.request(
        "POST", "/v1/admin/promote", headers=keys.header(keys.upload), json={"run_id": first}
    )
    assert refused.status_code == 403
    assert context.promotions.history("Station1") == []


def test_cli_promote_and_rollback_record_the_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from flts.cli import app as cli
    from flts.settings import Settings

    monkeypatch.setenv("FLTS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("USER", "operator7")
    monkeypatch.setenv("LOGNAME", "operator7")
    context = ServiceContext(Settings())
    spec = FeatureSpec()
    prepared = prepare(validate_frame(synthetic_traffic(400, seed=4), spec), spec=spec)
    runs = []
    try:
        for _ in range(2):
            model = model_class("PERSISTENCE")(spec, prepared.input_scaler, prepared.target_scaler)
            model.fit(prepared.train, prepared.validation)
            runs.append(
                context.tracker.log_training_run(
                    model, identifier="global", config_hash=CONFIG_HASH, correlation_id="c"
                )
            )
        runner = CliRunner()
        for run_id in runs:
            assert runner.invoke(cli, ["promote", run_id]).exit_code == 0
        assert runner.invoke(cli, ["rollback"]).exit_code == 0
        history = context.promotions.history("global")
        assert [(p.action, p.actor) for p in history] == [
            ("manual", "cli:operator7"),
            ("manual", "cli:operator7"),
            ("rollback", "cli:operator7"),
        ]
    finally:
        context.close()
