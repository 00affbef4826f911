"""The bus contract: every backend must pass these assertions unchanged.

A backend's test module subclasses :class:`BusContract` and provides one fixture,
``bus_factory``: a callable that opens a *new* bus object on the same underlying storage
(same named memory broker, same SQLite file, same Kafka cluster). Everything backend-specific
(servers, paths, timeouts) stays in that fixture, so a Kafka backend reuses this file as is.

Topics and groups are unique per test, so a shared server never mixes runs. Idempotency is
switched off wherever a test counts deliveries, so deduplication cannot hide a double
delivery.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from flts.bus import Bus, ConsumeStats, RetryPolicy
from flts.events import (
    DatasetUploaded,
    Event,
    ModelTraining,
    ModelTrainingEvent,
    TrainingStatus,
    decode,
    dlq_topic,
    new_event,
)
from flts.exceptions import BusError, DataValidationError

BusFactory = Callable[[], Bus]

FAST = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.01)
"""Real backoff, tiny delays: keeps the suite fast while exercising the retry path."""


def training_event(n: int, key: str = "ElBorn") -> ModelTrainingEvent:
    """A small event whose payload records ``n`` (as the model type) and whose key is ``key``."""
    event = new_event(
        ModelTraining(status=TrainingStatus.RUNNING, model_type=f"m{n}"), identifier=key
    )
    assert isinstance(event, ModelTrainingEvent)
    return event


def number(event: Event) -> int:
    """The ``n`` a :func:`training_event` was built with."""
    assert isinstance(event, ModelTrainingEvent)
    return int(event.payload.model_type[1:])


def collect_ids(into: list[str]) -> Callable[[Event], None]:
    """A handler appending each event id to ``into``."""
    return lambda event: into.append(event.event_id)


def run_in_threads(jobs: list[Callable[[], ConsumeStats]]) -> list[ConsumeStats]:
    """Run consume loops concurrently and return their stats (re-raising any failure)."""
    results: list[ConsumeStats | BaseException | None] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except BaseException as exc:  # surfaced below, in the test's thread
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    stats = []
    for result in results:
        if isinstance(result, BaseException):
            raise result
        assert result is not None, "a consumer did not finish"
        stats.append(result)
    return stats


def consume_concurrently(
    consumers: list[Bus], topic: str, group: str, handler: Callable[[Event], None]
) -> list[ConsumeStats]:
    """Every consumer drains ``topic`` for ``group`` in its own thread (no idempotency
    filter, so each delivery reaches ``handler``)."""
    return run_in_threads(
        [
            partial(
                c.consume, topic, group, handler, max_idle=1.0, poll_timeout=0.05, idempotent=False
            )
            for c in consumers
        ]
    )


class BusContract:
    """Assertions every bus backend must satisfy."""

    @pytest.fixture
    def bus(self, bus_factory: BusFactory) -> Iterator[Bus]:
        bus = bus_factory()
        yield bus
        bus.close()

    @pytest.fixture
    def topic(self) -> str:
        return f"test-{uuid.uuid4().hex[:12]}"

    @pytest.fixture
    def group(self) -> str:
        return f"group-{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------------ basics

    def test_round_trip_preserves_envelope(self, bus: Bus, topic: str, group: str) -> None:
        sent: list[Event] = [
            training_event(1, key="PobleSec"),
            new_event(
                DatasetUploaded(
                    dataset_id="d1",
                    filename="ElBorn.csv",
                    train_key="raw/d1/train.csv",
                    size_bytes=123,
                    digest="sha256:" + "0" * 64,
                ),
                correlation_id="run-1",
                identifier="ElBorn",
            ),
        ]
        for event in sent:
            bus.publish(topic, event)
        received: list[Event] = []
        stats = bus.consume(topic, group, received.append, max_messages=2, max_idle=5)
        assert received == sent
        assert type(received[1]) is type(sent[1])
        assert stats.handled == 2

    def test_every_group_gets_every_message(self, bus: Bus, topic: str) -> None:
        sent = [training_event(i, key=f"k{i % 2}") for i in range(5)]
        for event in sent:
            bus.publish(topic, event)
        for group in ("evaluator", "replica-1"):
            got: list[str] = []
            bus.consume(
                topic,
                f"{group}-{topic}",
                collect_ids(got),
                max_messages=5,
                max_idle=5,
                idempotent=False,
            )
            assert got == [e.event_id for e in sent]

    def test_each_message_goes_to_one_consumer_of_a_group(
        self, bus_factory: BusFactory, topic: str, group: str
    ) -> None:
        producer = bus_factory()
        sent = [training_event(i, key=f"station-{i % 7}") for i in range(40)]
        for event in sent:
            producer.publish(topic, event)
        handled: list[str] = []
        lock = threading.Lock()

        def handler(event: Event) -> None:
            time.sleep(0.001)  # let the consumers interleave
            with lock:
                handled.append(event.event_id)

        consumers = [bus_factory() for _ in range(3)]
        stats = consume_concurrently(consumers, topic, group, handler)
        for b in [producer, *consumers]:
            b.close()
        assert Counter(handled) == Counter(e.event_id for e in sent)
        assert sum(s.handled for s in stats) == len(sent)

    def test_committed_messages_are_not_redelivered_after_reopen(
        self, bus_factory: BusFactory, topic: str, group: str
    ) -> None:
        first = bus_factory()
        sent = [training_event(i) for i in range(5)]
        for event in sent:
            first.publish(topic, event)
        got: list[int] = []
        first.consume(topic, group, lambda e: got.append(number(e)), max_messages=3, max_idle=5)
        first.close()

        again = bus_factory()
        first_run = list(got)
        again.consume(
            topic, group, lambda e: got.append(number(e)), max_idle=0.5, poll_timeout=0.05
        )
        again.close()
        assert first_run == [0, 1, 2]
        assert got == [0, 1, 2, 3, 4]

    def test_pending_counts_uncommitted_messages(self, bus: Bus, topic: str, group: str) -> None:
        for i in range(4):
            bus.publish(topic, training_event(i))
        assert bus.pending(group, topic) == 4
        bus.consume(topic, group, lambda e: None, max_messages=1, max_idle=5)
        assert bus.pending(group, topic) == 3
        [row] = [r for r in bus.lag(group) if r.topic == topic]
        assert (row.group, row.pending, row.in_flight) == (group, 3, 0)

    # ------------------------------------------------------------------ failures

    def test_failing_handler_is_retried_then_dead_lettered_with_provenance(
        self, bus: Bus, topic: str, group: str
    ) -> None:
        sent = [training_event(i) for i in range(3)]
        for event in sent:
            bus.publish(topic, event)
        calls: Counter[int] = Counter()

        def handler(event: Event) -> None:
            calls[number(event)] += 1
            if number(event) == 1:
                raise RuntimeError("model store unreachable")

        stats = bus.consume(topic, group, handler, max_messages=3, max_idle=5, retry=FAST)

        assert calls == {0: 1, 1: FAST.max_attempts, 2: 1}  # the consumer went on
        assert (stats.handled, stats.dead_lettered, stats.retries) == (2, 1, 2)
        [letter] = bus.dead_letters(topic)
        assert letter.dlq_topic == dlq_topic(topic)
        assert letter.source_topic == topic
        assert letter.group == group
        assert letter.attempts == FAST.max_attempts
        assert letter.error == "RuntimeError: model store unreachable"
        assert letter.source_message_id.startswith(f"{topic}/")
        assert letter.key == "ElBorn"
        assert decode(letter.value) == sent[1]  # original bytes, replayable as is
        assert "model store unreachable" in letter.headers["x-dlq-traceback"]
        assert bus.pending(group, topic) == 0

    def test_data_errors_are_dead_lettered_without_retry(
        self, bus: Bus, topic: str, group: str
    ) -> None:
        bus.publish(topic, training_event(0))
        calls: list[int] = []

        def handler(event: Event) -> None:
            calls.append(number(event))
            raise DataValidationError("column 'down' is missing")

        stats = bus.consume(topic, group, handler, max_messages=1, max_idle=5, retry=FAST)
        assert calls == [0]
        assert stats.dead_lettered == 1
        [letter] = bus.dead_letters(topic)
        assert letter.attempts == 1
        assert "column 'down' is missing" in letter.error

    def test_undecodable_bytes_go_to_the_dlq(self, bus: Bus, topic: str, group: str) -> None:
        bus._publish(topic, "ElBorn", b"{not json", {})
        good = training_event(7)
        bus.publish(topic, good)
        got: list[Event] = []
        stats = bus.consume(topic, group, got.append, max_messages=2, max_idle=5, retry=FAST)
        assert got == [good]
        assert (stats.handled, stats.dead_lettered) == (1, 1)
        [letter] = bus.dead_letters(topic)
        assert letter.value == b"{not json"
        assert letter.attempts == 0
        assert letter.error.startswith("EventValidationError: malformed JSON")

    def test_no_undecodable_message_stops_the_consumer(
        self, bus: Bus, topic: str, group: str
    ) -> None:
        """Every kind of bytes that is not an event (empty, not UTF-8, nested past the JSON
        parser's recursion limit, the wrong JSON, an envelope missing its fields) is
        dead-lettered as is, in order, and the good event behind them on the same key is
        handled by the same consume call."""
        bad = [
            b"",
            b"\xff\xfe\xfa not utf-8",
            b"[" * 100_000,  # RecursionError in json.loads, not a JSONDecodeError
            b'"just a string"',
            b'{"schema_version": 1, "type": "model-training"}',
        ]
        for value in bad:
            bus._publish(topic, "ElBorn", value, {"content-type": "application/json"})
        good = training_event(7)
        bus.publish(topic, good)
        got: list[Event] = []
        stats = bus.consume(topic, group, got.append, max_messages=6, max_idle=10, retry=FAST)
        assert got == [good]
        assert (stats.handled, stats.dead_lettered) == (1, len(bad))
        letters = bus.dead_letters(topic)
        assert [letter.value for letter in letters] == bad
        assert all(letter.error.startswith("EventValidationError: ") for letter in letters)
        assert all(letter.attempts == 0 and letter.group == group for letter in letters)
        assert "nested too deeply" in letters[2].error
        assert bus.pending(group, topic) == 0

    def test_dead_letters_lists_every_dlq_topic(self, bus: Bus, topic: str, group: str) -> None:
        other = f"{topic}-other"
        bus._publish(topic, "a", b"[]", {})
        bus._publish(other, "a", b"{}", {})
        bus.consume([topic, other], group, lambda e: None, max_messages=2, max_idle=5)
        sources = {d.source_topic for d in bus.dead_letters()}
        assert {topic, other} <= sources

    # ------------------------------------------------------------------ idempotency

    def test_duplicate_event_is_handled_once(self, bus: Bus, topic: str, group: str) -> None:
        event = training_event(1)
        bus.publish(topic, event)
        bus.publish(topic, event)  # e.g. a producer retry after a lost acknowledgement
        got: list[str] = []
        stats = bus.consume(
            topic, group, lambda e: got.append(e.event_id), max_messages=2, max_idle=5
        )
        assert got == [event.event_id]
        assert (stats.handled, stats.duplicates) == (1, 1)
        assert bus.pending(group, topic) == 0

    def test_idempotency_is_per_group_and_can_be_switched_off(
        self, bus: Bus, topic: str, group: str
    ) -> None:
        event = training_event(1)
        bus.publish(topic, event)
        bus.publish(topic, event)
        got: list[str] = []
        bus.consume(topic, group, lambda e: got.append(e.event_id), max_messages=2, max_idle=5)
        bus.consume(
            topic,
            f"{group}-raw",
            lambda e: got.append(e.event_id),
            max_messages=2,
            max_idle=5,
            idempotent=False,
        )
        assert got == [event.event_id] * 3

    def test_failed_event_is_not_marked_processed(self, bus: Bus, topic: str, group: str) -> None:
        """A dead-lettered event replayed after a fix must run again, not be skipped."""
        event = training_event(1)
        bus.publish(topic, event)
        broken = True
        calls: list[str] = []

        def handler(e: Event) -> None:
            calls.append(e.event_id)
            if broken:
                raise RuntimeError("bug")

        bus.consume(topic, group, handler, max_messages=1, max_idle=5, retry=FAST)
        broken = False
        bus.publish(topic, event)  # operator replay
        stats = bus.consume(topic, group, handler, max_messages=1, max_idle=5, retry=FAST)
        assert stats.handled == 1
        assert len(calls) == FAST.max_attempts + 1

    # ------------------------------------------------------------------ ordering

    def test_order_is_kept_per_key_across_concurrent_consumers(
        self, bus_factory: BusFactory, topic: str, group: str
    ) -> None:
        producer = bus_factory()
        keys = ["PobleSec", "ElBorn"]  # fewer keys than consumers: some must wait their turn
        for i in range(24):
            producer.publish(topic, training_event(i, key=keys[i % 2]))
        order: dict[str, list[int]] = {k: [] for k in keys}
        active: set[str] = set()
        overlaps: list[str] = []
        lock = threading.Lock()

        def handler(event: Event) -> None:
            with lock:
                if event.identifier in active:
                    overlaps.append(event.identifier)
                active.add(event.identifier)
            time.sleep(0.001 * (number(event) % 3))  # uneven work lets consumers overtake
            with lock:
                active.discard(event.identifier)
                order[event.identifier].append(number(event))

        consumers = [bus_factory() for _ in range(4)]
        consume_concurrently(consumers, topic, group, handler)
        for b in [producer, *consumers]:
            b.close()
        assert overlaps == []  # one key is never in two handlers at once
        for k, numbers in order.items():
            assert numbers == sorted(numbers), k
            assert len(numbers) == 12

    # ------------------------------------------------------------------ shutdown

    def test_stop_event_ends_consume_promptly(self, bus: Bus, topic: str, group: str) -> None:
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        started = time.monotonic()
        stats = bus.consume(topic, group, lambda e: None, stop=stop, poll_timeout=0.05)
        assert time.monotonic() - started < 2.0
        assert stats.messages == 0

    def test_stop_during_backoff_hands_the_message_back(
        self, bus_factory: BusFactory, topic: str, group: str
    ) -> None:
        bus = bus_factory()
        event = training_event(1)
        bus.publish(topic, event)
        stop = threading.Event()

        def flaky(e: Event) -> None:
            stop.set()  # shutdown requested while this attempt fails
            raise RuntimeError("transient")

        slow = RetryPolicy(max_attempts=5, base_delay=30.0)
        started = time.monotonic()
        stats = bus.consume(topic, group, flaky, stop=stop, retry=slow, poll_timeout=0.05)
        assert time.monotonic() - started < 5.0  # did not sleep out the backoff
        assert stats.messages == 0
        assert bus.dead_letters(topic) == []

        got: list[str] = []
        bus.consume(topic, group, lambda e: got.append(e.event_id), max_messages=1, max_idle=5)
        bus.close()
        assert got == [event.event_id]

    def test_close_lets_the_running_handler_finish_and_publish(
        self, bus_factory: BusFactory, topic: str, group: str
    ) -> None:
        bus = bus_factory()
        bus.publish(topic, training_event(1))
        downstream = f"{topic}-out"
        in_handler = threading.Event()
        closing = threading.Event()
        finished = threading.Event()

        def handler(event: Event) -> None:
            in_handler.set()
            assert closing.wait(5)
            time.sleep(0.1)  # close() is now waiting for us
            bus.publish(downstream, training_event(2))
            finished.set()

        stats = _consume_then_close(bus, topic, group, handler, in_handler, closing, finished)
        assert stats.handled == 1
        assert bus.closed
        with pytest.raises(BusError):
            bus.publish(topic, training_event(3))

        reopened = bus_factory()
        got: list[int] = []
        reopened.consume(
            downstream, group, lambda e: got.append(number(e)), max_messages=1, max_idle=5
        )
        reopened.close()
        assert got == [2]


def _consume_then_close(
    bus: Bus,
    topic: str,
    group: str,
    handler: Callable[[Event], None],
    in_handler: threading.Event,
    closing: threading.Event,
    finished: threading.Event,
) -> ConsumeStats:
    """Consume in a thread; close from this one while the handler is mid-flight."""
    result: list[ConsumeStats] = []
    worker = threading.Thread(
        target=lambda: result.append(bus.consume(topic, group, handler, poll_timeout=0.05))
    )
    worker.start()
    assert in_handler.wait(5)
    closing.set()
    bus.close(timeout=10)
    assert finished.is_set(), "close() returned before the running handler finished"
    worker.join(5)
    return result[0]
