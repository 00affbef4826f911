"""What only the Kafka backend owes, against a real Kafka-protocol broker (Tansu): topics
created with the configured partitions, keyed partitioning, real partition/offset provenance
on dead letters, a long handler that outlives ``max.poll.interval.ms`` without its consumer
being evicted, static membership, and URL parsing."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer

from contract.bus_suite import FAST, number, training_event
from flts.bus import RetryPolicy, open_bus
from flts.bus.kafka import KafkaBus
from flts.events import Event, dlq_topic
from flts.exceptions import ConfigurationError
from servers import Server

FASTJOIN = "session_timeout_ms=2000&heartbeat_interval_ms=500&static_membership=false"


@pytest.fixture
def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"topic-{tag}", f"group-{tag}"


def _bus(server: Server, extra: str = "") -> KafkaBus:
    bus = open_bus(f"{server.url}?partitions=3&replication_factor=1&{FASTJOIN}{extra}")
    assert isinstance(bus, KafkaBus)
    return bus


def test_topics_are_created_with_the_configured_partitions(
    kafka_server: Server, names: tuple[str, str]
) -> None:
    topic, group = names
    with _bus(kafka_server) as bus:
        bus.publish(topic, training_event(1))
        bus.consume(topic, group, lambda e: None, max_messages=1, max_idle=10)
        bus._publish(dlq_topic(topic), "k", b"x", {})
        assert len(bus._partitions(topic)) == 3
        assert len(bus._partitions(dlq_topic(topic))) == 1  # one order of failures


def test_one_key_stays_on_one_partition_and_dead_letters_carry_real_positions(
    kafka_server: Server, names: tuple[str, str]
) -> None:
    topic, group = names
    with _bus(kafka_server) as bus:
        sent = [training_event(i, key=f"station-{i % 4}") for i in range(12)]
        for event in sent:
            bus.publish(topic, event)
        positions: dict[str, set[int]] = {}
        for message in bus._read(topic, 100):
            positions.setdefault(message.key, set()).add(message.partition)
        assert all(len(p) == 1 for p in positions.values()), positions
        assert len(set().union(*positions.values())) > 1  # keys do spread over partitions

        def fail_seven(event: Event) -> None:
            if number(event) == 7:
                raise RuntimeError("boom")

        bus.consume(topic, group, fail_seven, max_messages=12, max_idle=10, retry=FAST)
        [letter] = bus.dead_letters(topic)
        [source] = [m for m in bus._read(topic, 100) if m.value == letter.value]
        assert letter.headers["x-dlq-partition"] == str(source.partition)
        assert letter.headers["x-dlq-offset"] == str(source.offset)
        assert letter.source_message_id == source.message_id
        assert bus.pending(group, topic) == 0


def test_a_handler_longer_than_max_poll_interval_is_not_evicted(
    kafka_server: Server, names: tuple[str, str]
) -> None:
    """The handler outlives both session.timeout.ms and max.poll.interval.ms; a rival
    consumer waits in the same group. Without the keepalive poller the member is evicted,
    its commit is refused and the rival (or the re-joined member) runs the message again."""
    topic, group = names
    extra = "&max_poll_interval_ms=2500"
    worker, rival = _bus(kafka_server, extra), _bus(kafka_server, extra)
    worker.publish(topic, training_event(1))
    calls: Counter[str] = Counter()
    in_handler = threading.Event()

    def slow(event: Event) -> None:
        calls[event.event_id] += 1
        in_handler.set()
        time.sleep(4.0)

    def count(event: Event) -> None:
        calls[event.event_id] += 1

    results: list[int] = []
    first = threading.Thread(
        target=lambda: results.append(
            worker.consume(topic, group, slow, max_idle=7.0, idempotent=False).handled
        )
    )
    first.start()
    assert in_handler.wait(15)
    second = threading.Thread(
        target=lambda: results.append(
            rival.consume(topic, group, count, max_idle=5.0, idempotent=False).handled
        )
    )
    second.start()
    first.join(30)
    second.join(30)
    assert not first.is_alive()
    assert not second.is_alive()
    assert list(calls.values()) == [1]
    assert sorted(results) == [0, 1]
    assert worker.pending(group, topic) == 0
    worker.close()
    rival.close()


def test_static_membership_sets_a_stable_instance_id(
    kafka_server: Server, names: tuple[str, str]
) -> None:
    topic, group = names
    url = f"{kafka_server.url}?partitions=1&replication_factor=1"
    with open_bus(
        url, session_timeout_ms=2000, heartbeat_interval_ms=500, static_membership=True
    ) as bus:
        assert isinstance(bus, KafkaBus)
        bus.publish(topic, training_event(1))
        seen: list[str] = []

        def handler(event: Event) -> None:
            [member] = bus._members.values()
            seen.append(member.instance_id)

        bus.consume(topic, group, handler, consumer="trainer-LSTM/0", max_messages=1, max_idle=20)
        assert seen == ["trainer-LSTM-0"]
        assert bus.pending(group, topic) == 0


def test_consumer_config_is_the_documented_one(kafka_server: Server) -> None:
    bus = _bus(kafka_server, "&max_poll_interval_ms=9000&fetch.min.bytes=1")
    config = bus._consumer_config("g", "c")
    assert config["partition.assignment.strategy"] == "cooperative-sticky"
    assert config["enable.auto.commit"] is False
    assert (config["session.timeout.ms"], config["max.poll.interval.ms"]) == (2000, 9000)
    assert config["fetch.min.bytes"] == "1"
    # Static membership is opt-in: per-process consumer ids are not stable across restarts.
    assert "group.instance.id" not in config
    assert isinstance(Consumer(config), Consumer)
    bus.close()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("kafka://", "must look like"),
        ("kafka://host", "must look like"),
        ("kafka://a:1,b", "must look like"),
        ("kafka://a:1?partitions=two", "partitions must be a number"),
        ("kafka://a:1?partitions=0", "must be >= 1"),
        ("kafka://a:1?retention=1", "unknown URL parameters"),
        ("kafka://a:1?static_membership=maybe", "true or false"),
        ("kafka://a:1?session_timeout_ms=500&heartbeat_interval_ms=500", "heartbeat"),
    ],
)
def test_bad_kafka_urls_are_configuration_errors(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason):
        open_bus(url)


def test_url_lists_several_brokers() -> None:
    bus = open_bus("kafka://10.0.0.1:9092,kafka-2.local:9093?partitions=6&replication_factor=3")
    assert isinstance(bus, KafkaBus)
    assert bus.bootstrap_servers == "10.0.0.1:9092,kafka-2.local:9093"
    assert (bus.partitions, bus.replication_factor) == (6, 3)
    bus.close(timeout=1)


def test_delivery_counts_survive_the_consumer_and_hand_backs_are_not_counted(
    kafka_server: Server, names: tuple[str, str]
) -> None:
    """A member that started the handler and then vanished (its bus closed without a commit:
    what a killed process leaves) counted the delivery in ``__flts_deliveries``; the next
    member, in a new bus object, takes the count over, and the limit applies. A graceful
    hand-back writes the count back down."""
    topic, group = names
    with _bus(kafka_server, "&partitions=1") as producer:
        producer.publish(topic, training_event(1, key="k"))
        producer.publish(topic, training_event(2, key="k"))
    for expected in (1, 2):
        doomed = _bus(kafka_server, "&partitions=1")
        message = doomed._poll([topic], group, "doomed", timeout=20)
        assert message is not None
        assert message.delivery_count == expected
        with doomed._keepalive(message):
            pass  # the handler started; the process "dies" before any commit...
        doomed._settle(message.receipt)  # ...and, being dead, holds no rebalance back
        doomed.close()
    polite = _bus(kafka_server, "&partitions=1")
    message = polite._poll([topic], group, "polite", timeout=20)
    assert message is not None
    assert message.delivery_count == 3
    with polite._keepalive(message):
        pass
    polite._release(message)  # handed back (a stop during a backoff): not a delivery
    polite.close()

    handled: list[int] = []
    with _bus(kafka_server, "&partitions=1") as survivor:
        stats = survivor.consume(
            topic,
            group,
            lambda e: handled.append(number(e)),
            max_messages=2,
            max_idle=20,
            retry=RetryPolicy(max_deliveries=2),
        )
        [letter] = survivor.dead_letters(topic)
    assert handled == [2]  # the message behind it on the partition goes on
    assert (stats.dead_lettered, stats.handled) == (1, 1)
    assert "delivered 2 times without a commit" in letter.error
    assert letter.attempts == 2
