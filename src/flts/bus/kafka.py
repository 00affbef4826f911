"""``kafka://host:port[,host:port]``: the distributed bus on any Kafka-API broker (confluent-kafka).

The semantics (retries, dead letters, idempotency, graceful stop) come from
:mod:`flts.bus.base`; this module maps its primitives onto Kafka:

* **Topics** are created on first use with ``partitions`` and ``replication_factor`` (URL
  options; ``-1`` takes the broker's default) or verified to exist (a partition count that
  differs from the option is logged, never changed). ``dlq.*`` topics get ``dlq_partitions``
  (1 by default: one total order of failures, and a dead letter's id is its offset).
* **Keys.** A message's key is the event's identifier; the producer uses Java's ``murmur2``
  partitioner, so one station always lands on the same partition as with Java clients, and a
  partition is consumed by one member at a time, one message at a time: per-key order.
* **Commits.** Auto-commit is off; ``_commit`` synchronously commits ``offset + 1`` of the
  message's partition once the base class says the side effect is done. A consumer that dies
  before that leaves the offset behind and the group's next owner of the partition
  re-reads it (at-least-once). ``_release`` seeks back so the same consumer reads it again.
* **Publishing** is synchronous: produce, then flush and check the delivery report
  (``acks=all``, idempotent producer), so a returned ``publish`` is on the broker. A publish
  that fails (no report within ``timeout``, a delivery error) raises
  :class:`~flts.exceptions.BusError`, which callers wait out as an outage, and leaves a fresh
  producer and an unverified topic for the next one (see ``_renew_producer``).
* **Groups.** Each consume loop (one per thread and group) owns one ``Consumer``, reused by
  later ``consume`` calls of that thread and group so they do not re-join. Assignment is
  ``cooperative-sticky``. With ``static_membership=true`` ``group.instance.id`` is derived
  from the consumer id, so a member keeps its identity across re-joins; turn it on only where
  each process has a consumer id that is stable across restarts (e.g. the pod name): with the
  default per-process ids a restarted process is a new member anyway, and a stopped static
  member keeps its partitions until ``session.timeout.ms`` passes (Tansu, the test broker,
  hands them over even later). Off by default for that reason. Inference replicas each use
  their own group, so ``model-selected`` is a broadcast; trainers of one type and the
  evaluator share a group.
  The first poll of a new consumer waits (up to ``join_timeout`` seconds) for its group join,
  so ``max_idle`` counts from membership, not from the (broker-dependent) join delay.
* **Long handlers (how eviction is avoided).** librdkafka heartbeats from its own thread, so
  the session never expires while a handler runs; what evicts a consumer is not calling
  ``poll`` for ``max.poll.interval.ms``. So ``_keepalive`` (the base class's hook around each
  handler) *pauses every assigned partition and keeps calling poll from a helper thread*
  while the handler runs in the consume thread; polls return nothing (paused), serve
  rebalance callbacks and keep the member alive. If a rebalance revokes the partition of the
  message in flight, the revoke callback waits for that message to be committed or handed
  back before letting the partition go, so its next owner starts after it (no duplicate).
* **Delivery counts** (poison-pill detection) are durable, because Kafka keeps none and a
  message that kills its consumer process would otherwise be redelivered forever, blocking its
  partition. Before a handler runs, the consumer appends one small record to the compacted
  topic ``__flts_deliveries`` (one partition, ``cleanup.policy=compact``): key
  ``[group, topic, partition]``, value ``{"offset": O, "deliveries": n}``. One key per
  partition and group is enough because a partition is handled one message at a time: the
  only message of a partition that another process can have started without committing is
  the one at the group's committed offset, which is where a new owner starts. So the first
  message a member reads from a newly assigned partition takes its count from the latest
  record of that key (when the offsets match); every later one, and redeliveries within the
  process, are counted in memory. A graceful hand-back (``_release``) writes the count back
  down. Cost: one acknowledged produce per handled message (duplicates and undecodable
  messages are committed without one), and reading the records appended since the last read
  once per partition assignment; compaction keeps the topic at one record per key. The
  committed offset's own ``metadata`` field would need no extra topic, but brokers are not
  bound to keep it (Tansu, the test broker, drops it), so the count lives in a topic any
  Kafka-API broker stores.
* **Idempotency** uses the base's in-memory store (per process). A durable one is not needed:
  duplicates across processes only come from redelivery after a crash or a rebalance, and the
  handlers are idempotent themselves (trainers and the evaluator find an existing run for the
  same config hash in the tracking store; writes are write-then-rename).
* **Shutdown.** ``close`` (SIGTERM in ``flts worker``) lets the running handler finish and
  commit, then closes the consumers (leaving the group) and flushes the producer; a handler
  abandoned by a killed process was never committed.

URL options (query string, or keyword arguments of :func:`flts.bus.open_bus`):
``partitions`` (3), ``replication_factor`` (-1), ``dlq_partitions`` (1),
``session_timeout_ms`` (45000), ``heartbeat_interval_ms`` (3000), ``max_poll_interval_ms``
(300000), ``static_membership`` (false), ``join_timeout`` (60 s), ``timeout`` (30 s for admin
calls and flushes). Any option containing a dot (``security.protocol``,
``sasl.mechanism``...) goes to librdkafka unchanged.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from flts.bus.base import Bus, Lag, Message
from flts.events import DLQ_PREFIX
from flts.exceptions import BusError, ConfigurationError
from flts.redaction import redact

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("flts.bus.kafka.librdkafka")

_INT_OPTIONS = {
    "partitions": 3,
    "replication_factor": -1,
    "dlq_partitions": 1,
    "session_timeout_ms": 45_000,
    "heartbeat_interval_ms": 3_000,
    "max_poll_interval_ms": 300_000,
}
_FLOAT_OPTIONS = {"join_timeout": 60.0, "timeout": 30.0}
_KEEPALIVE_POLL = 0.2  # seconds between polls while a handler runs
_KEEPALIVE_AFTER = 1.0  # a handler running longer than this gets the keepalive poller
_FIRST_FETCH_GRACE = 1.0  # seconds the first poll after a join waits for the first fetch
DELIVERIES_TOPIC = "__flts_deliveries"
"""Compacted topic of durable delivery counts (see the module docstring); ``__`` keeps it out
of the bus's topic listings, like Kafka's own internal topics."""


@dataclass
class _Member:
    """One consume loop's consumer and the message it has in flight."""

    consumer: Consumer
    group: str
    topics: tuple[str, ...]
    joined: threading.Event = field(default_factory=threading.Event)
    assignment: set[tuple[str, int]] = field(default_factory=set)
    inflight: Message | None = None
    settled: threading.Event = field(default_factory=threading.Event)
    handler_done: threading.Event = field(default_factory=threading.Event)
    poller: threading.Thread | None = None
    revoked_inflight: bool = False
    paused: bool = False
    instance_id: str = ""
    fresh: set[tuple[str, int]] = field(default_factory=set)
    """Assigned partitions not read from yet: their first message may have been delivered by
    another process, so its count comes from the durable tally."""


class KafkaBus(Bus):
    """Bus on a Kafka-API cluster; see the module docstring for the mapping."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        partitions: int = 3,
        replication_factor: int = -1,
        dlq_partitions: int = 1,
        session_timeout_ms: int = 45_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        static_membership: bool = False,
        join_timeout: float = 60.0,
        timeout: float = 30.0,
        client_config: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        if partitions < 1 or dlq_partitions < 1:
            raise ConfigurationError("kafka bus: partitions and dlq_partitions must be >= 1")
        if replication_factor == 0 or replication_factor < -1:
            raise ConfigurationError("kafka bus: replication_factor must be >= 1 (or -1)")
        if not 0 < heartbeat_interval_ms < session_timeout_ms <= max_poll_interval_ms:
            raise ConfigurationError(
                "kafka bus: need 0 < heartbeat_interval_ms < session_timeout_ms "
                "<= max_poll_interval_ms"
            )
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.dlq_partitions = dlq_partitions
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.static_membership = static_membership
        self.join_timeout = join_timeout
        self.timeout = timeout
        self._client_config = dict(client_config or {})
        self._base_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "logger": _librdkafka_log,  # into Python logging, not raw stderr
            **self._client_config,
        }
        self._lock = threading.Lock()
        self._members: dict[tuple[int, str], _Member] = {}  # (thread id, group) -> member
        self._deliveries: dict[tuple[str, str, int, int], int] = {}
        self._known_topics: set[str] = set()
        self._local = threading.local()  # the running consume call's stop event
        self._admin = AdminClient(dict(self._base_config))
        self._producer = self._new_producer()
        self._reader: Consumer | None = None  # assign-only: watermarks, DLQ reads
        self._tally = _Tally(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        parts = urlsplit(url)
        servers = parts.netloc
        if not servers or any(not re.fullmatch(r"[\w.\-]+:\d+", s) for s in servers.split(",")):
            raise ConfigurationError(
                f"kafka bus URL {redact(url)!r} must look like kafka://host:port[,host:port][?options]"
            )
        query: dict[str, Any] = dict(parse_qsl(parts.query))
        client = {k: query.pop(k) for k in [k for k in query if "." in k]}
        for name in _INT_OPTIONS:
            if name in query:
                query[name] = _number(name, query[name], int)
        for name in _FLOAT_OPTIONS:
            if name in query:
                query[name] = _number(name, query[name], float)
        if "static_membership" in query:
            flag = query["static_membership"].lower()
            if flag not in ("true", "false", "1", "0"):
                raise ConfigurationError("kafka bus: static_membership must be true or false")
            query["static_membership"] = flag in ("true", "1")
        unknown = set(query) - {*_INT_OPTIONS, *_FLOAT_OPTIONS, "static_membership"}
        if unknown:
            raise ConfigurationError(f"kafka bus: unknown URL parameters {sorted(unknown)}")
        return cls(servers, client_config=client, **{**query, **options})

    # ------------------------------------------------------------------ topics

    def _ensure_topics(self, topics: Sequence[str]) -> None:
        """Create missing topics (configured partitions and replication), verify others."""
        missing = [t for t in topics if t not in self._known_topics]
        if not missing:
            return
        with _translated(f"creating topics {missing}"):
            existing = self._admin.list_topics(timeout=self.timeout).topics
            new = [
                NewTopic(t, self._partitions_of(t), self.replication_factor, config=config)
                for t in missing
                if t not in existing
                for config in [{"cleanup.policy": "compact"} if t == DELIVERIES_TOPIC else {}]
            ]
            for topic, future in (self._admin.create_topics(new) if new else {}).items():
                try:
                    future.result(self.timeout)
                    log.info("created topic %s", topic)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        for t in missing:
            want = self._partitions_of(t)
            if t in existing and len(existing[t].partitions) != want:
                log.warning(
                    "topic %s exists with %d partitions (configured: %d); using it as is",
                    t,
                    len(existing[t].partitions),
                    want,
                )
        self._known_topics.update(missing)

    def _partitions_of(self, topic: str) -> int:
        """Partitions a topic of this bus is created with."""
        if topic == DELIVERIES_TOPIC:
            return 1  # one order of records, read from one place
        return self.dlq_partitions if topic.startswith(DLQ_PREFIX) else self.partitions

    # ------------------------------------------------------------------ publish

    def _new_producer(self) -> Producer:
        return Producer(
            {
                **self._base_config,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "partitioner": "murmur2_random",  # Java's key -> partition mapping
            }
        )

    def _renew_producer(self, failed: Producer) -> None:
        """Replace a producer whose publish failed, dropping what it still queues.

        An idempotent producer that lost its broker can come back to one that no longer
        knows its producer id (a restarted in-memory broker, a rebuilt cluster): librdkafka
        then raises a fatal error, or waits for the id forever, and that producer never
        delivers again. The caller was told the publish failed and publishes again, so the
        dropped copies lose nothing.
        """
        with self._lock:
            if self._producer is not failed:
                return  # another thread already replaced it
            self._producer = self._new_producer()
        try:
            failed.purge()
            failed.flush(0)
        except (KafkaException, RuntimeError) as exc:
            log.debug("discarding a failed producer: %s", exc)

    def _publish(self, topic: str, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        self._check_open()
        self._ensure_topics([topic])
        outcome: list[KafkaError | None] = []

        def delivered(err: KafkaError | None, _msg: KafkaMessage) -> None:
            outcome.append(err)

        producer = self._producer
        try:
            with _translated(f"publish to {topic}"):
                producer.produce(
                    topic,
                    value=value,
                    key=key.encode(),
                    headers=[(k, v.encode()) for k, v in headers.items()],
                    on_delivery=delivered,
                )
                producer.flush(self.timeout)
            if not outcome or outcome[0] is not None:
                reason = outcome[0] if outcome else "no delivery report before the timeout"
                raise BusError(f"kafka bus: publish to {topic} not acknowledged: {reason}")
        except BusError:
            # Start the next publish afresh: check the topic again (a broker that lost it
            # would otherwise never see it created) and use a new producer.
            self._known_topics.discard(topic)
            self._renew_producer(producer)
            raise

    # ------------------------------------------------------------------ consume

    @contextmanager
    def _consume_scope(self, group: str, stop: threading.Event | None) -> Iterator[None]:
        """The loop's consumer leaves its group when the :meth:`Bus.consume` call returns.

        A member that stays in the group without polling would stall every rebalance of the
        group until ``max.poll.interval.ms`` evicts it, so consumers live exactly as long as
        their consume loop (services run one loop for their whole life).
        """
        self._local.stop = stop
        try:
            yield
        finally:
            self._local.stop = None
            member = self._members.get((threading.get_ident(), group))
            if member is not None:
                self._close_member(member)

    def _member(self, topics: Sequence[str], group: str, consumer_id: str) -> _Member:
        """This thread's consumer for ``group``, subscribed to ``topics``."""
        key = (threading.get_ident(), group)
        member = self._members.get(key)
        if member is not None and member.topics == tuple(topics):
            return member
        if member is not None:  # same group, other topics: leave, then re-join
            self._close_member(member)
        self._ensure_topics(topics)
        config = self._consumer_config(group, consumer_id)
        member = _Member(Consumer(config), group, tuple(topics))
        member.instance_id = str(config.get("group.instance.id", ""))
        member.consumer.subscribe(
            list(topics),
            on_assign=lambda c, ps: self._on_assign(member, ps),
            on_revoke=lambda c, ps: self._on_revoke(member, ps, lost=False),
            on_lost=lambda c, ps: self._on_revoke(member, ps, lost=True),
        )
        with self._lock:
            self._members[key] = member
        return member

    def _consumer_config(self, group: str, consumer_id: str) -> dict[str, Any]:
        """librdkafka settings of a group member (client options from the URL win)."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": _librdkafka_log,
            "group.id": group,
            "client.id": f"flts-{consumer_id}"[:200],
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",  # a new group sees the whole history
            "partition.assignment.strategy": "cooperative-sticky",
            "session.timeout.ms": self.session_timeout_ms,
            "heartbeat.interval.ms": self.heartbeat_interval_ms,
            "max.poll.interval.ms": self.max_poll_interval_ms,
        }
        if self.static_membership:
            config["group.instance.id"] = re.sub(r"[^A-Za-z0-9._-]", "-", consumer_id)[:200]
        return {**config, **self._client_config}

    def _on_assign(self, member: _Member, partitions: list[TopicPartition]) -> None:
        member.consumer.incremental_assign(partitions)
        member.assignment.update((p.topic, p.partition) for p in partitions)
        member.fresh.update((p.topic, p.partition) for p in partitions)
        if member.paused and partitions:
            member.consumer.pause(partitions)  # a handler runs: fetch nothing new yet
        member.joined.set()

    def _on_revoke(self, member: _Member, partitions: list[TopicPartition], *, lost: bool) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        message = member.inflight
        if message is not None and (message.topic, message.partition) in gone:
            if lost:
                log.warning("partition of in-flight %s was lost", message.message_id)
            else:
                # Runs in the keepalive thread: hold the rebalance until the handler's
                # message is committed or handed back, so its next owner starts after it.
                log.info("rebalance waits for in-flight %s", message.message_id)
                if not member.settled.wait(self.max_poll_interval_ms / 1000):
                    log.warning("gave up waiting for %s; it may be redelivered", message.message_id)
            member.revoked_inflight = True
        member.assignment.difference_update(gone)
        member.fresh.difference_update(gone)
        with self._lock:
            for k in [k for k in self._deliveries if k[0] == member.group and k[1:3] in gone]:
                if message is None or k[1:] != (message.topic, message.partition, message.offset):
                    del self._deliveries[k]

    def _poll(
        self, topics: Sequence[str], group: str, consumer: str, timeout: float
    ) -> Message | None:
        self._check_open()
        member = self._member(topics, group, consumer)
        deadline = time.monotonic() + timeout
        if not member.joined.is_set():
            # Count the wait from membership, and give the first fetch time to arrive.
            deadline = self._wait_for_join(member) + max(timeout, _FIRST_FETCH_GRACE)
        stop: threading.Event | None = getattr(self._local, "stop", None)
        while True:
            left = deadline - time.monotonic()
            with _translated("poll"):
                raw = member.consumer.poll(max(0.0, min(left, 0.5)))
            if raw is not None:
                message = self._message(raw, member, consumer)
                if message is not None:
                    return message
            if left <= 0 or self._closing.is_set() or (stop is not None and stop.is_set()):
                return None

    def _wait_for_join(self, member: _Member) -> float:
        """Poll until the group assigned partitions (or none) to ``member``; returns the time."""
        stop: threading.Event | None = getattr(self._local, "stop", None)
        deadline = time.monotonic() + self.join_timeout
        while not member.joined.is_set() and time.monotonic() < deadline:
            if self._closing.is_set() or (stop is not None and stop.is_set()):
                break
            with _translated("poll"):
                raw = member.consumer.poll(0.1)
            if raw is not None:  # cannot happen before an assignment; keep it anyway
                member.consumer.seek(_position(raw))
        return time.monotonic()

    def _message(self, raw: KafkaMessage, member: _Member, consumer: str) -> Message | None:
        error = raw.error()
        if error is not None:
            if error.fatal():
                raise BusError(f"kafka bus: fatal consumer error: {error}")
            log.warning("kafka consumer error (will retry): %s", error)
            return None
        topic, partition, offset = (
            str(raw.topic()),
            int(raw.partition() or 0),
            int(raw.offset() or 0),
        )
        position = (member.group, topic, partition, offset)
        with self._lock:
            before = self._deliveries.get(position, 0)
        if (topic, partition) in member.fresh:
            member.fresh.discard((topic, partition))
            if before == 0:  # the group's head of this partition: others may have tried it
                before = self._tally.prior(member.group, topic, partition, offset)
        with self._lock:
            count = self._deliveries[position] = before + 1
        key = raw.key()
        return Message(
            topic,
            key.decode(errors="replace") if isinstance(key, bytes) else str(key or ""),
            bytes(raw.value() or b""),
            _headers(raw),
            offset,
            group=member.group,
            consumer=consumer,
            partition=partition,
            delivery_count=count,
            receipt=member,
        )

    @contextmanager
    def _keepalive(self, message: Message) -> Iterator[None]:
        """Record the delivery durably, then pause the member's partitions and poll from a
        helper thread while the handler runs."""
        member: _Member = message.receipt
        # Before the handler: a handler that kills the process has been counted already.
        self._tally.record(message, message.delivery_count)
        member.inflight = message
        member.settled.clear()
        member.handler_done.clear()
        member.revoked_inflight = False

        def keep_polling() -> None:
            # Quick handlers never touch the consumer: pausing drops prefetched messages.
            if member.handler_done.wait(_KEEPALIVE_AFTER):
                return
            try:
                member.consumer.pause(member.consumer.assignment())
                member.paused = True
            except KafkaException as exc:
                log.warning("could not pause partitions during a long handler: %s", exc)
            while not member.handler_done.wait(_KEEPALIVE_POLL):
                try:
                    raw = member.consumer.poll(0)
                except KafkaException as exc:  # surfaced by the commit if it persists
                    log.warning("keepalive poll failed: %s", exc)
                    continue
                if raw is not None and raw.error() is None:  # a partition assigned meanwhile
                    where = _position(raw)
                    member.consumer.seek(where)
                    member.consumer.pause([where])

        member.poller = threading.Thread(target=keep_polling, name="flts-kafka-keepalive")
        member.poller.daemon = True
        member.poller.start()
        try:
            yield
        finally:
            member.handler_done.set()  # the base now commits or releases: _settle finishes

    def _settle(self, member: _Member) -> None:
        """The in-flight message is committed or handed back: let rebalances go, resume."""
        member.settled.set()
        if member.poller is not None:
            member.poller.join()
            member.poller = None
        member.inflight = None
        if member.paused:
            member.paused = False
            with _translated("resume"):
                member.consumer.resume(member.consumer.assignment())

    def _commit(self, message: Message) -> None:
        member: _Member = message.receipt
        where = TopicPartition(message.topic, message.partition, message.offset + 1)
        try:
            member.consumer.commit(offsets=[where], asynchronous=False)
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code in (
                KafkaError.UNKNOWN_MEMBER_ID,
                KafkaError.ILLEGAL_GENERATION,
                KafkaError.REBALANCE_IN_PROGRESS,
                KafkaError._ASSIGNMENT_LOST,
            ):
                log.warning(
                    "commit of %s rejected after losing its partition (%s); its next owner "
                    "will process it again",
                    message.message_id,
                    exc,
                )
            else:
                raise BusError(f"kafka bus: commit of {message.message_id} failed: {exc}") from exc
        finally:
            with self._lock:
                self._deliveries.pop(
                    (message.group, message.topic, message.partition, message.offset), None
                )
            self._tally.settled(message)
            if member.inflight is message:
                self._settle(member)

    def _release(self, message: Message) -> None:
        member: _Member = message.receipt
        with self._lock:  # a hand-back is not a failed delivery
            position = (message.group, message.topic, message.partition, message.offset)
            if position in self._deliveries:
                self._deliveries[position] = max(self._deliveries[position] - 1, 0)
        if self._tally.recorded(message):
            try:  # nor is it one for the next process that reads the partition
                self._tally.record(message, message.delivery_count - 1)
            except BusError as exc:
                log.warning("could not hand back the count of %s: %s", message.message_id, exc)
            self._tally.settled(message)
        revoked = member.revoked_inflight
        if member.inflight is message:
            self._settle(member)
        if not revoked and (message.topic, message.partition) in member.assignment:
            try:  # read it again next poll
                member.consumer.seek(
                    TopicPartition(message.topic, message.partition, message.offset)
                )
            except KafkaException as exc:
                log.warning("could not seek back to %s: %s", message.message_id, exc)

    # ------------------------------------------------------------------ close

    def _close_member(self, member: _Member) -> None:
        with self._lock:
            for key in [k for k, m in self._members.items() if m is member]:
                del self._members[key]
        try:
            member.consumer.close()  # leaves the group; nothing uncommitted is committed
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing kafka consumer: %s", exc)

    def _close(self) -> None:
        for member in list(self._members.values()):
            self._close_member(member)
        if self._reader is not None:
            self._reader.close()
        self._tally.close()
        self._producer.flush(self.timeout)

    # ------------------------------------------------------------------ operator reads

    def _reader_consumer(self) -> Consumer:
        """An assign-only consumer (never joins its group) for watermarks and DLQ reads."""
        if self._reader is None:
            self._reader = Consumer(
                {
                    **self._base_config,
                    "group.id": f"flts-reader-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                }
            )
        return self._reader

    def _partitions(self, topic: str) -> list[int]:
        with _translated(f"metadata for {topic}"):
            meta = self._admin.list_topics(topic=topic, timeout=self.timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        return sorted(meta.partitions)

    def _watermarks(self, topic: str) -> dict[int, tuple[int, int]]:
        reader = self._reader_consumer()
        with self._lock, _translated(f"watermarks of {topic}"):
            return {
                p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout)
                for p in self._partitions(topic)
            }

    def _read(self, topic: str, limit: int) -> list[Message]:
        marks = self._watermarks(topic)
        wanted = {p: (max(lo, hi - limit), hi) for p, (lo, hi) in marks.items() if hi > lo}
        if not wanted:
            return []
        reader = self._reader_consumer()
        out: list[tuple[int, Message]] = []
        with self._lock:
            reader.assign([TopicPartition(topic, p, start) for p, (start, _) in wanted.items()])
            try:
                todo = sum(hi - start for start, hi in wanted.values())
                deadline = time.monotonic() + self.timeout
                while todo > 0 and time.monotonic() < deadline:
                    raw = reader.poll(0.5)
                    if raw is None or raw.error() is not None:
                        continue
                    p, offset = int(raw.partition() or 0), int(raw.offset() or 0)
                    if offset >= wanted[p][1]:
                        continue
                    todo -= 1
                    key = raw.key()
                    message = Message(
                        topic,
                        key.decode(errors="replace") if isinstance(key, bytes) else "",
                        bytes(raw.value() or b""),
                        _headers(raw),
                        offset,
                        partition=p,
                    )
                    out.append((raw.timestamp()[1], message))
            finally:
                reader.unassign()
        out.sort(key=lambda item: (item[0], item[1].partition, item[1].offset))
        return [m for _, m in out[-limit:]]

    def _topics(self) -> list[str]:
        with _translated("listing topics"):
            names = self._admin.list_topics(timeout=self.timeout).topics
        return sorted(t for t in names if not t.startswith("__"))

    def _committed(self, group: str) -> dict[str, dict[int, int]]:
        """The group's committed offsets, per topic and partition."""
        request = [ConsumerGroupTopicPartitions(group)]
        with _translated(f"offsets of group {group}"):
            result = self._admin.list_consumer_group_offsets(request)[group].result(self.timeout)
        committed: dict[str, dict[int, int]] = {}
        for tp in result.topic_partitions or []:
            if tp.offset >= 0:
                committed.setdefault(tp.topic, {})[tp.partition] = tp.offset
        return committed

    def pending(self, group: str, topic: str) -> int:
        done = self._committed(group).get(topic, {})
        return sum(hi - max(lo, done.get(p, lo)) for p, (lo, hi) in self._watermarks(topic).items())

    def lag(self, group: str | None = None) -> list[Lag]:
        if group is None:
            with _translated("listing groups"):
                listed = self._admin.list_consumer_groups().result(self.timeout)
            groups = sorted(g.group_id for g in listed.valid)
        else:
            groups = [group]
        rows = []
        for name in groups:
            for topic, done in sorted(self._committed(name).items()):
                pending = sum(
                    hi - max(lo, done.get(p, lo)) for p, (lo, hi) in self._watermarks(topic).items()
                )
                in_flight = sum(
                    1
                    for m in list(self._members.values())
                    if m.group == name and m.inflight is not None and m.inflight.topic == topic
                )
                rows.append(Lag(name, topic, pending, in_flight))
        return rows


class _Tally:
    """Delivery counts in :data:`DELIVERIES_TOPIC`, shared by every process of every group.

    ``record`` appends (acknowledged) before a handler runs; ``prior`` catches up with what
    was appended since its last read, on a private assign-only consumer, and answers how
    often the message at a partition's head was delivered before. See the module docstring.
    """

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._latest: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._mine: set[tuple[str, str, int, int]] = set()  # recorded here, not yet settled
        self._position = 0  # next offset of the tally topic to read

    @staticmethod
    def _key(group: str, topic: str, partition: int) -> str:
        return json.dumps([group, topic, partition])

    def record(self, message: Message, deliveries: int) -> None:
        """Durably note that ``message`` has been delivered ``deliveries`` times."""
        key = (message.group, message.topic, message.partition)
        value = json.dumps({"offset": message.offset, "deliveries": deliveries})
        self._bus._publish(DELIVERIES_TOPIC, self._key(*key), value.encode(), {})
        with self._lock:
            self._latest[key] = (message.offset, deliveries)
            self._mine.add((*key, message.offset))

    def recorded(self, message: Message) -> bool:
        """Whether this process recorded the delivery of ``message`` (a release undoes it)."""
        with self._lock:
            return (message.group, message.topic, message.partition, message.offset) in self._mine

    def settled(self, message: Message) -> None:
        """``message`` was committed or handed back: nothing of it is left to undo."""
        with self._lock:
            self._mine.discard((message.group, message.topic, message.partition, message.offset))

    def prior(self, group: str, topic: str, partition: int, offset: int) -> int:
        """Deliveries of ``offset`` recorded so far by any process (0 if none)."""
        with self._lock:
            self._catch_up()
            recorded, deliveries = self._latest.get((group, topic, partition), (-1, 0))
        return deliveries if recorded == offset else 0

    def _catch_up(self) -> None:
        """Read the records appended since the last call, up to the high watermark."""
        bus = self._bus
        bus._ensure_topics([DELIVERIES_TOPIC])
        where = TopicPartition(DELIVERIES_TOPIC, 0)
        with _translated("reading delivery counts"):
            if self._consumer is None:
                self._consumer = Consumer(
                    {
                        **bus._base_config,
                        "group.id": f"flts-tally-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False,
                        "auto.offset.reset": "earliest",
                        "fetch.wait.max.ms": 20,
                    }
                )
                self._consumer.assign([TopicPartition(DELIVERIES_TOPIC, 0, 0)])
                self._position = 0
            _, high = self._consumer.get_watermark_offsets(where, timeout=bus.timeout)
            deadline = time.monotonic() + bus.timeout
            while self._position < high:
                if time.monotonic() > deadline:
                    raise BusError(
                        f"kafka bus: delivery counts not read up to offset {high} of "
                        f"{DELIVERIES_TOPIC} within {bus.timeout}s"
                    )
                raw = self._consumer.poll(0.2)
                if raw is None or raw.error() is not None:
                    [at] = self._consumer.position([where])
                    self._position = max(self._position, at.offset)  # past a compacted gap
                    continue
                self._position = int(raw.offset() or 0) + 1
                self._take(raw)

    def _take(self, raw: KafkaMessage) -> None:
        """Fold one record into the latest counts; a damaged record is skipped, not fatal."""
        try:
            group, topic, partition = json.loads(raw.key() or b"")
            value = json.loads(raw.value() or b"")
            self._latest[str(group), str(topic), int(partition)] = (
                int(value["offset"]),
                int(value["deliveries"]),
            )
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            log.warning("skipping a damaged delivery count at offset %s: %s", raw.offset(), exc)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """The one place Kafka client errors become :class:`BusError` (``action`` says what failed)."""
    try:
        yield
    except (KafkaException, BufferError) as exc:
        raise BusError(f"kafka bus: {action} failed: {exc}") from exc


def _position(raw: KafkaMessage) -> TopicPartition:
    """Where ``raw`` was read from (to seek back to it)."""
    return TopicPartition(str(raw.topic()), int(raw.partition() or 0), int(raw.offset() or 0))


def _headers(raw: KafkaMessage) -> dict[str, str]:
    found = raw.headers() or []
    pairs = list(found.items()) if isinstance(found, dict) else list(found)
    return {
        k: v.decode(errors="replace") if isinstance(v, bytes) else str(v or "") for k, v in pairs
    }


def _number(name: str, text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError as exc:
        raise ConfigurationError(f"kafka bus: {name} must be a number") from exc
