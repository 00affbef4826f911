"""``flts dlq list`` / ``flts dlq replay`` through the CLI, on SQLite and on a real
Kafka-protocol broker (Tansu): list shows the provenance, replay re-publishes the original
event to its source topic, where a fixed consumer then handles it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from contract.bus_suite import FAST, number, training_event
from flts.bus import open_bus
from flts.cli.dlq import app
from flts.events import Event
from servers.kafka import start_kafka

KAFKA_OPTIONS = (
    "partitions=2&replication_factor=1&session_timeout_ms=2000"
    "&heartbeat_interval_ms=500&static_membership=false"
)


@pytest.fixture(scope="module", params=["sqlite", "kafka"])
def bus_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    home = tmp_path_factory.mktemp(f"dlq-{request.param}")
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'bus.db'}?poll_interval=0.01"
        return
    with start_kafka(home) as server:
        yield f"{server.url}?{KAFKA_OPTIONS}"


def test_list_then_replay_by_id_and_all(bus_url: str) -> None:
    topic, group = f"jobs-{uuid.uuid4().hex[:8]}", f"workers-{uuid.uuid4().hex[:8]}"
    broken = {1, 2}
    handled: list[int] = []

    def handler(event: Event) -> None:
        if number(event) in broken:
            raise RuntimeError(f"cannot handle {number(event)}")
        handled.append(number(event))

    with open_bus(bus_url) as bus:
        for i in range(4):
            bus.publish(topic, training_event(i))
        bus.consume(topic, group, handler, max_messages=4, max_idle=10, retry=FAST)
    assert handled == [0, 3]

    runner = CliRunner()
    listed = runner.invoke(app, ["list", "--topic", topic, "-o", "json", "--bus-url", bus_url])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["error"] for r in rows] == [
        "RuntimeError: cannot handle 1",
        "RuntimeError: cannot handle 2",
    ]
    assert all(r["group"] == group and r["attempts"] == FAST.max_attempts for r in rows)
    assert rows[0]["id"] == f"dlq.{topic}/0/{rows[0]['id'].rsplit('/', 1)[1]}"

    table = runner.invoke(app, ["list", "--bus-url", bus_url])
    assert table.exit_code == 0
    assert "Dead letters (2)" in table.output

    bad = runner.invoke(app, ["replay", "--bus-url", bus_url])
    assert bad.exit_code == 1
    assert "--id ID" in bad.output
    unknown = runner.invoke(app, ["replay", "--id", f"dlq.{topic}/0/999", "--bus-url", bus_url])
    assert unknown.exit_code == 1
    assert "no such dead letter" in unknown.output

    broken.clear()  # the bug is fixed: replay the first letter only, then all
    one = runner.invoke(app, ["replay", "--id", rows[0]["id"], "--bus-url", bus_url])
    assert one.exit_code == 0, one.output
    with open_bus(bus_url) as bus:
        bus.consume(topic, group, handler, max_messages=1, max_idle=10, retry=FAST)
        assert handled == [0, 3, 1]
        everything = runner.invoke(app, ["replay", "--all", "--topic", topic, "--bus-url", bus_url])
        assert everything.exit_code == 0
        assert "replayed 2 dead letter(s)" in everything.output
        stats = bus.consume(topic, group, handler, max_messages=2, max_idle=10, retry=FAST)
        # event 1 already succeeded after its first replay: the group skips it as a duplicate
        assert handled == [0, 3, 1, 2]
        assert (stats.handled, stats.duplicates) == (1, 1)
        assert bus.pending(group, topic) == 0
