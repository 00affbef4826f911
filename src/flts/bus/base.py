"""The bus interface and, once for every backend, its delivery semantics.

A backend implements a handful of primitives (``_publish``, ``_poll``, ``_commit``,
``_close``, plus the operator reads ``_read``, ``_topics``, ``lag``); everything a service
relies on lives here so memory, SQLite and Kafka behave alike and one contract suite
(``tests/contract/bus_suite.py``) proves it:

* **Envelopes in, envelopes out.** ``publish`` encodes an :mod:`flts.events` envelope and keys
  it by ``identifier``; ``consume`` decodes before calling the handler.
* **At-least-once.** A message is committed only after its handler returned or after it was
  dead-lettered. A consumer that dies in between leaves it uncommitted, and the backend
  redelivers it (memory: when the bus closes; SQLite: when the lease expires; Kafka: on
  rebalance). Handlers must therefore tolerate a repeat; ``idempotent=True`` removes the
  common case (see below).
* **Retries, then a dead letter with provenance.** A failing handler is retried in-process
  with exponential backoff (:class:`RetryPolicy`). When attempts run out, when the error is
  one no retry can fix (invalid data), when the bytes are not a valid event, or when a message
  keeps coming back without ever being committed (a poison pill that kills its consumer), the
  original bytes go unchanged to ``dlq.<topic>`` with ``x-dlq-*`` headers saying where they
  came from and why; then the source message is committed and consumption goes on.
* **Outages are waited out, never dead-lettered.** An
  :class:`~flts.exceptions.InfrastructureError` (object store, tracking server or broker
  unreachable; each backend translates its client's errors into it, see
  :mod:`flts.transient`) is not the message's fault: the handler is called again after a
  capped exponential backoff with jitter (:meth:`RetryPolicy.outage_delay`), without using up
  an attempt, for up to ``RetryPolicy.outage_budget`` seconds of one outage. The same goes for
  the loop's own bus calls (poll, commit, publishing a dead letter). The message stays
  claimed meanwhile: the handler's wait runs inside the backend's keepalive (SQLite renews the
  lease, Kafka keeps polling paused partitions), and a stop request ends the wait at once,
  handing the message back uncommitted. When the budget runs out the message is handed back
  uncommitted too (a hand-back is not counted as a delivery) and the error propagates out of
  ``consume``: the process exits and its supervisor restarts it, nothing is lost.
* **No stored message stops a group.** A backend that cannot even read a stored message as
  one of its own (an SQLite row with a value of the wrong type or headers that are not JSON)
  hands it over anyway with :attr:`Message.defect` saying why, the raw bytes as ``value`` and
  the unreadable headers' text in ``x-dlq-raw-headers``; like bytes that are not an event, it
  is dead-lettered at once (``attempts`` 0) without calling the handler. Anything that goes
  wrong while decoding counts as the message's fault, never the consumer's: a consumer that
  crashed on such a message would crash on it again after every restart, before the delivery
  limit could ever apply.
* **Idempotency by event id.** With ``idempotent=True`` (the default) an event whose
  ``event_id`` the group already processed successfully is committed without calling the
  handler: duplicates from a producer retry or a redelivery cost nothing. The id is recorded
  after the handler returns and before the commit, so a crash between the two is harmless.
  Two copies of one event handled *concurrently* by two consumers can still both run; handlers
  with external side effects stay idempotent themselves (write-then-rename, upserts).
* **Graceful shutdown.** ``consume`` checks its ``stop`` event and :meth:`Bus.close` between
  messages, never in the middle of a handler; ``close`` waits for running loops to finish
  their current message. A stop during a retry backoff hands the message back uncommitted.

Errors of the bus itself (:class:`~flts.exceptions.BusError`: database locked past its busy
timeout, broker gone) are waited out like any outage, then propagate out of ``consume``
once ``outage_budget`` is spent; the service should exit and be restarted, and whatever it
had not committed is redelivered.

Ordering: within a topic and a group, messages with the same key (the identifier, i.e. one
station) are handed out in publish order, and a later one is not handed out while an earlier
one is still in flight; messages with different keys may be processed concurrently.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Protocol, Self

from flts.events import DLQ_PREFIX, Envelope, Event, decode, dlq_topic, encode, validate_topic
from flts.exceptions import (
    BusError,
    ConfigurationError,
    DataValidationError,
    EventValidationError,
    InfrastructureError,
)

log = logging.getLogger(__name__)

Handler = Callable[[Event], None]
"""What ``consume`` calls for each event; raising means "failed, retry or dead-letter"."""

# Provenance headers on a dead letter (Kafka Connect's ``__connect.errors.*`` idea: the value
# stays byte-for-byte the original, so replaying it is a plain re-publish).
H_SOURCE_TOPIC = "x-dlq-source-topic"
H_PARTITION = "x-dlq-partition"
H_OFFSET = "x-dlq-offset"
H_MESSAGE_ID = "x-dlq-message-id"
H_GROUP = "x-dlq-group"
H_CONSUMER = "x-dlq-consumer"
H_ERROR = "x-dlq-error"
H_TRACEBACK = "x-dlq-traceback"
H_ATTEMPTS = "x-dlq-attempts"
H_FAILED_AT = "x-dlq-failed-at"
H_RAW_HEADERS = "x-dlq-raw-headers"
"""The stored headers as text, when the backend could not read them as string pairs."""

_MAX_ERROR_CHARS = 2_000
_MAX_TRACEBACK_CHARS = 8_000


@dataclass(frozen=True)
class Message:
    """One delivery of a stored message to a consumer of ``group``.

    ``receipt`` is the backend's handle for committing this delivery (opaque to callers).
    ``defect`` is set when the backend could not read the stored message as one of its own
    (see :func:`stored_fields`); ``consume`` then dead-letters it without decoding it.
    """

    topic: str
    key: str
    value: bytes
    headers: Mapping[str, str]
    offset: int
    group: str = ""
    consumer: str = ""
    partition: int = 0
    delivery_count: int = 1
    receipt: Any = None
    defect: str = ""

    @property
    def message_id(self) -> str:
        """Stable, human-readable position: ``topic/partition/offset``."""
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard ``consume`` tries before dead-lettering, and how long it waits out an outage.

    ``max_attempts`` handler calls per delivery, sleeping ``base_delay * 2**(n-1)`` (capped at
    ``max_delay``) between them. ``max_deliveries`` bounds redeliveries of a message that was
    never committed (its consumer kept dying). Exceptions in ``no_retry`` go straight to the
    dead-letter topic: bad data stays bad however often it is read.

    Infrastructure errors use none of those attempts: they are retried after
    :meth:`outage_delay` for up to ``outage_budget`` seconds from the first error of the
    outage (``flts.settings.BusSettings`` holds the deployment's values).
    """

    max_attempts: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_deliveries: int = 5
    no_retry: tuple[type[BaseException], ...] = (DataValidationError,)
    outage_budget: float = 900.0
    outage_base_delay: float = 1.0
    outage_max_delay: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_deliveries < 1:
            raise ConfigurationError("max_attempts and max_deliveries must be at least 1")
        if min(self.base_delay, self.max_delay, self.outage_base_delay) < 0:
            raise ConfigurationError("retry delays must not be negative")
        if self.outage_max_delay < self.outage_base_delay or self.outage_budget < 0:
            raise ConfigurationError(
                "outage_max_delay must be at least outage_base_delay, outage_budget >= 0"
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def outage_delay(self, wait: int, rng: random.Random | None = None) -> float:
        """Seconds before retry number ``wait`` (1-based) during an outage: the capped
        exponential step ``min(outage_max_delay, outage_base_delay * 2**(wait-1))``, of which
        a random half is kept ("equal jitter"), so many consumers of one broken backend do
        not come back in lockstep, yet none retries in a tight loop."""
        step = min(self.outage_max_delay, self.outage_base_delay * 2 ** min(wait - 1, 62))
        return float(step / 2 + (rng or random).uniform(0, step / 2))


class _Outage:
    """The backoff state of one consume loop through one outage; reset by any success."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started: float | None = None
        self.waits = 0

    def reset(self) -> None:
        if self.started is not None:
            log.warning(
                "backend reachable again after %.1fs (%d waits)",
                time.monotonic() - self.started,
                self.waits,
            )
        self.started = None
        self.waits = 0

    def next_delay(self, exc: InfrastructureError) -> float:
        """Seconds to wait before trying again; re-raises ``exc`` once the budget is spent."""
        now = time.monotonic()
        if self.started is None:
            self.started = now
        left = self.policy.outage_budget - (now - self.started)
        if left <= 0:
            log.error(
                "backend still unavailable after %.0fs (budget %.0fs); giving up: %s",
                now - self.started,
                self.policy.outage_budget,
                exc,
            )
            raise exc
        self.waits += 1
        return min(self.policy.outage_delay(self.waits), left)


@dataclass
class ConsumeStats:
    """What one ``consume`` call did; services log it, tests assert on it."""

    handled: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retries: int = 0
    outage_waits: int = 0
    """Waits for an unreachable backend (not handler attempts, never dead letters)."""

    @property
    def messages(self) -> int:
        """Messages taken off the bus and committed."""
        return self.handled + self.duplicates + self.dead_lettered


@dataclass(frozen=True)
class Lag:
    """Backlog of one consumer group on one topic (``flts status``)."""

    group: str
    topic: str
    pending: int
    """Messages not yet committed by the group, including those in flight."""
    in_flight: int
    """Messages currently claimed by a consumer of the group."""


@dataclass(frozen=True)
class DeadLetter:
    """A message on a ``dlq.<topic>``, with the provenance the consumer attached."""

    dlq_topic: str
    dlq_offset: int
    source_topic: str
    source_message_id: str
    group: str
    error: str
    attempts: int
    failed_at: str
    key: str
    value: bytes
    headers: Mapping[str, str] = field(repr=False)
    dlq_partition: int = 0
    """Partition of the dead letter in its DLQ topic (always 0 except on Kafka)."""

    @property
    def letter_id(self) -> str:
        """Where the dead letter itself lives, ``dlq.<topic>/<partition>/<offset>``: the id
        ``flts dlq replay --id`` takes (unique across every DLQ topic and backend)."""
        return f"{self.dlq_topic}/{self.dlq_partition}/{self.dlq_offset}"

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        h = message.headers
        return cls(
            dlq_topic=message.topic,
            dlq_offset=message.offset,
            source_topic=h.get(H_SOURCE_TOPIC, message.topic.removeprefix(DLQ_PREFIX)),
            source_message_id=h.get(H_MESSAGE_ID, ""),
            group=h.get(H_GROUP, ""),
            error=h.get(H_ERROR, ""),
            attempts=_int(h.get(H_ATTEMPTS, "0")),
            failed_at=h.get(H_FAILED_AT, ""),
            key=message.key,
            value=message.value,
            headers=dict(h),
            dlq_partition=message.partition,
        )


_MAX_RAW_HEADER_CHARS = 2_000


def _int(text: str) -> int:
    """A header's integer; 0 for a damaged one, so one bad letter cannot break ``dlq list``."""
    try:
        return int(text)
    except ValueError:
        return 0


def stored_fields(
    key: object, value: object, headers: object
) -> tuple[str, bytes, dict[str, str], str]:
    """A stored message's key, value and headers as the types a :class:`Message` carries,
    and a defect (empty if none) naming every field that did not already have its type.

    Backends whose storage can hold other types (SQLite columns, a memory record built by
    hand) pass what they read through here, so a damaged message still becomes a delivery
    that can be dead-lettered with its raw bytes instead of an exception in ``_poll`` that
    would stop the group on the same message after every restart.
    """
    problems: list[str] = []
    if isinstance(key, str):
        text_key = key
    else:
        problems.append(f"key is {type(key).__name__}, not text")
        text_key = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, bytearray | memoryview):
        raw = bytes(value)
    else:
        problems.append(f"value is {type(value).__name__}, not bytes")
        raw = b"" if value is None else str(value).encode(errors="surrogateescape")
    if isinstance(headers, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        pairs = dict(headers)
    else:
        problems.append("headers are not string pairs")
        pairs = {H_RAW_HEADERS: repr(headers)[:_MAX_RAW_HEADER_CHARS]}
    return text_key, raw, pairs, "; ".join(problems)


class IdempotencyStore(Protocol):
    """Event ids a consumer group has processed successfully."""

    def seen(self, group: str, event_id: str) -> bool: ...

    def mark(self, group: str, event_id: str) -> None: ...


class MemoryIdempotencyStore:
    """Process-local store; enough for ``memory://`` and a fallback for remote backends."""

    def __init__(self) -> None:
        self._ids: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def seen(self, group: str, event_id: str) -> bool:
        with self._lock:
            return event_id in self._ids.get(group, ())

    def mark(self, group: str, event_id: str) -> None:
        with self._lock:
            self._ids.setdefault(group, set()).add(event_id)


def default_consumer_id() -> str:
    """Unique per consume loop, readable in ``lag``/DLQ output: host, pid, thread."""
    return f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:6]}"


class Bus(ABC):
    """An event bus. Open one with :func:`flts.bus.open_bus`; use it as a context manager."""

    def __init__(self) -> None:
        self._closing = threading.Event()
        self._closed = False
        self._state = threading.Condition()
        self._close_lock = threading.Lock()
        self._consuming: dict[int, int] = {}  # thread id -> nested consume loops
        self._store: IdempotencyStore | None = None

    # ------------------------------------------------------------------ backend primitives

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build the bus from its URL; query parameters and ``options`` tune the backend."""

    @abstractmethod
    def _publish(self, topic: str, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        """Append one message durably (as durable as the backend is) before returning."""

    @abstractmethod
    def _poll(
        self, topics: Sequence[str], group: str, consumer: str, timeout: float
    ) -> Message | None:
        """Claim the next message for ``consumer`` in ``group``, waiting up to ``timeout``.

        No other consumer of the group may receive it until it is committed or released (or,
        where the backend has leases, the lease ran out).
        """

    @abstractmethod
    def _commit(self, message: Message) -> None:
        """Mark ``message`` done for its group: it is never delivered to the group again."""

    def _release(self, message: Message) -> None:  # noqa: B027 - optional primitive
        """Hand a claimed message back uncommitted so it is redelivered soon.

        Optional: backends without it redeliver when the claim expires.
        """

    @contextmanager
    def _keepalive(self, message: Message) -> Iterator[None]:
        """Keep the claim on ``message`` alive while its handler runs (lease renewal)."""
        yield

    @abstractmethod
    def _close(self) -> None:
        """Release connections and hand back claims this bus still holds."""

    @abstractmethod
    def _read(self, topic: str, limit: int) -> list[Message]:
        """The newest ``limit`` messages of ``topic`` in offset order, ignoring groups."""

    @abstractmethod
    def _topics(self) -> list[str]:
        """Every topic that holds messages."""

    @abstractmethod
    def lag(self, group: str | None = None) -> list[Lag]:
        """Backlog per (group, topic) the group has consumed from; all groups when ``None``."""

    def _idempotency_store(self) -> IdempotencyStore:
        """Where processed event ids live; durable backends override with their own table."""
        return MemoryIdempotencyStore()

    # ------------------------------------------------------------------ public API

    def publish(self, topic: str, envelope: Envelope) -> None:
        """Publish ``envelope`` on ``topic``, keyed by its ``identifier`` (one station's
        events keep their order)."""
        self._check_open()
        validate_topic(topic)
        headers = {
            "content-type": "application/json",
            "x-event-type": envelope.type,
            "x-event-id": envelope.event_id,
            "x-schema-version": str(envelope.schema_version),
        }
        self._publish(topic, envelope.identifier, encode(envelope), headers)

    def consume(
        self,
        topics: str | Sequence[str],
        group: str,
        handler: Handler,
        *,
        consumer: str | None = None,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        max_idle: float | None = None,
        poll_timeout: float = 1.0,
        retry: RetryPolicy | None = None,
        idempotent: bool = True,
    ) -> ConsumeStats:
        """Run ``handler`` on each event of ``topics`` for consumer group ``group``.

        Returns when ``stop`` is set, the bus is closing, ``max_messages`` were committed, or
        no message arrived for ``max_idle`` seconds (``None``: wait forever). Every group
        receives every message; within a group each message goes to one consumer.
        """
        with self._consume_scope(group, stop):
            topic_list = [topics] if isinstance(topics, str) else list(topics)
            if not topic_list:
                raise ConfigurationError("consume needs at least one topic")
            for name in [*topic_list, group]:
                validate_topic(name)
            policy = retry or RetryPolicy()
            consumer_id = consumer or default_consumer_id()
            stats = ConsumeStats()
            outage = _Outage(policy)
            self._enter_consume()
            try:
                idle_since = time.monotonic()
                while not self._should_stop(stop):
                    if max_messages is not None and stats.messages >= max_messages:
                        break
                    wait = poll_timeout
                    if max_idle is not None:
                        left = max_idle - (time.monotonic() - idle_since)
                        if left <= 0:
                            break
                        wait = min(wait, left)
                    try:
                        message = self._poll(topic_list, group, consumer_id, wait)
                        if message is None:
                            outage.reset()
                            continue
                        if not self._process(
                            message, handler, policy, idempotent, stop, stats, outage
                        ):
                            break  # stopped during a backoff; the message went back uncommitted
                    except InfrastructureError as exc:
                        # The bus itself (or a keepalive's bookkeeping) failed; the message in
                        # hand, if any, went back. Past the budget this re-raises.
                        if self._wait_out(outage, exc, stop, stats, "consuming"):
                            break
                        continue
                    idle_since = time.monotonic()
            finally:
                self._exit_consume()
            return stats

    def dead_letters(self, topic: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters of ``topic`` (the source topic, e.g. ``training-data``), or of every
        topic when ``None``; newest ``limit`` per DLQ topic, oldest first."""
        self._check_open()
        names = (
            [dlq_topic(topic)]
            if topic is not None
            else sorted(t for t in self._topics() if t.startswith(DLQ_PREFIX))
        )
        return [DeadLetter.from_message(m) for name in names for m in self._read(name, limit)]

    def replay(self, letter: DeadLetter) -> None:
        """Re-publish a dead letter's original bytes to its source topic (``flts dlq replay``).

        The key and the original headers are kept, the ``x-dlq-*`` provenance is dropped and
        ``x-replayed-from`` names the dead letter. The letter stays in its DLQ (the log is
        append-only). A replayed event runs again even with idempotency on: failed events are
        never marked processed.
        """
        self._check_open()
        validate_topic(letter.source_topic)
        headers = {k: v for k, v in letter.headers.items() if not k.startswith("x-dlq-")}
        headers["x-replayed-from"] = letter.letter_id
        self._publish(letter.source_topic, letter.key, letter.value, headers)

    @abstractmethod
    def pending(self, group: str, topic: str) -> int:
        """Messages of ``topic`` the group has not committed (all of them for a new group)."""

    def close(self, timeout: float = 30.0) -> None:
        """Stop consume loops after their current message, then release resources.

        Safe to call twice, from another thread, or from inside a handler (the bus then
        closes when that handler's loop returns). Loops still busy after ``timeout`` keep
        running; the last one to return releases the resources.
        """
        self._closing.set()
        me = threading.get_ident()
        with self._state:
            if me in self._consuming:
                return  # the loop we are inside finishes the close on its way out
            self._state.wait_for(lambda: not self._consuming, timeout)
        self._finish_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        # Only a *finished* close refuses work: a handler still running during a graceful
        # shutdown must be able to publish its downstream event.
        if self._closed:
            raise BusError(f"{type(self).__name__} is closed")

    def _should_stop(self, stop: threading.Event | None) -> bool:
        return self._closing.is_set() or (stop is not None and stop.is_set())

    @contextmanager
    def _consume_scope(self, group: str, stop: threading.Event | None) -> Iterator[None]:
        """Around one whole :meth:`consume` call of ``group``; backends that keep per-loop
        state (the Kafka bus: its stop event and group member) override it."""
        yield

    def _enter_consume(self) -> None:
        if self._closing.is_set():
            raise BusError(f"{type(self).__name__} is closing; no new consume loops")
        me = threading.get_ident()
        with self._state:
            self._consuming[me] = self._consuming.get(me, 0) + 1

    def _exit_consume(self) -> None:
        me = threading.get_ident()
        with self._state:
            self._consuming[me] -= 1
            if not self._consuming[me]:
                del self._consuming[me]
            done = not self._consuming
            self._state.notify_all()
        if done and self._closing.is_set():
            self._finish_close()

    def _finish_close(self) -> None:
        # Held across _close() so a second caller returns only once resources are released.
        with self._close_lock:
            with self._state:
                if self._closed or self._consuming:
                    return
                self._closed = True
            self._close()

    @property
    def _processed(self) -> IdempotencyStore:
        if self._store is None:
            self._store = self._idempotency_store()
        return self._store

    def _process(
        self,
        message: Message,
        handler: Handler,
        policy: RetryPolicy,
        idempotent: bool,
        stop: threading.Event | None,
        stats: ConsumeStats,
        outage: _Outage,
    ) -> bool:
        """Handle one delivery end to end; ``False`` if it was handed back unfinished."""

        def settle(*steps: Callable[[], None]) -> bool:
            """Run the bus steps that finish this delivery, waiting out outages; on a stop
            request the message goes back uncommitted."""
            for step in steps:
                if not self._bus_step(step, outage, stop, stats, f"settling {message.message_id}"):
                    self._give_back(message)
                    return False
            return True

        def commit() -> None:
            self._commit(message)

        try:
            if message.defect:
                raise EventValidationError(f"unreadable stored message: {message.defect}")
            try:
                event = decode(message.value)
            except EventValidationError:
                raise
            except Exception as exc:  # e.g. RecursionError: still the bytes' fault
                raise EventValidationError(
                    f"undecodable bytes: {type(exc).__name__}: {exc}"
                ) from exc
        except EventValidationError as exc:
            if not settle(partial(self._dead_letter, message, exc, 0), commit):
                return False
            stats.dead_lettered += 1
            return True
        if idempotent and self._processed.seen(message.group, event.event_id):
            log.info("skipping duplicate event %s on %s", event.event_id, message.message_id)
            if not settle(commit):
                return False
            stats.duplicates += 1
            return True
        if message.delivery_count > policy.max_deliveries:
            error = BusError(
                f"delivered {message.delivery_count - 1} times without a commit "
                "(its consumer keeps dying?)"
            )
            if not settle(
                partial(self._dead_letter, message, error, message.delivery_count - 1), commit
            ):
                return False
            stats.dead_lettered += 1
            return True
        try:
            with self._keepalive(message):
                outcome = self._run_handler(message, event, handler, policy, stop, stats, outage)
        except BaseException:
            # KeyboardInterrupt, SystemExit, an outage past its budget...: not the message's
            # fault; give it back.
            self._give_back(message)
            raise
        if outcome is None:
            self._give_back(message)
            return False
        steps: list[Callable[[], None]] = []
        if outcome is True and idempotent:
            steps.append(partial(self._processed.mark, message.group, event.event_id))
        if not settle(*steps, commit):
            return False
        if outcome is True:
            stats.handled += 1
        else:
            stats.dead_lettered += 1
        return True

    def _run_handler(
        self,
        message: Message,
        event: Event,
        handler: Handler,
        policy: RetryPolicy,
        stop: threading.Event | None,
        stats: ConsumeStats,
        outage: _Outage,
    ) -> bool | None:
        """``True`` handled, ``False`` dead-lettered, ``None`` stopped during a backoff."""
        attempt = 0
        while True:
            try:
                handler(event)
            except InfrastructureError as exc:
                # An outage is not the message's fault: wait, without using up an attempt.
                if self._wait_out(outage, exc, stop, stats, f"handling {message.message_id}"):
                    return None
            except Exception as exc:
                attempt += 1
                final = attempt >= policy.max_attempts or isinstance(exc, policy.no_retry)
                if final:
                    letter = partial(self._dead_letter, message, exc, attempt)
                    doing = f"dead-lettering {message.message_id}"
                    if not self._bus_step(letter, outage, stop, stats, doing):
                        return None
                    return False
                delay = policy.delay(attempt)
                log.warning(
                    "handler failed on %s (attempt %d/%d), retrying in %.3gs: %s",
                    message.message_id,
                    attempt,
                    policy.max_attempts,
                    delay,
                    exc,
                )
                stats.retries += 1
                if self._sleep(delay, stop):
                    return None
            else:
                outage.reset()
                return True

    def _wait_out(
        self,
        outage: _Outage,
        exc: InfrastructureError,
        stop: threading.Event | None,
        stats: ConsumeStats,
        doing: str,
    ) -> bool:
        """Sleep one backoff step of an outage (re-raising ``exc`` once the budget is spent);
        ``True`` if a stop request ended the wait."""
        delay = outage.next_delay(exc)
        log.warning("%s: %s; retrying in %.1fs", doing, exc, delay)
        stats.outage_waits += 1
        return self._sleep(delay, stop)

    def _bus_step(
        self,
        step: Callable[[], None],
        outage: _Outage,
        stop: threading.Event | None,
        stats: ConsumeStats,
        doing: str,
    ) -> bool:
        """Run ``step`` (a commit, a dead letter) until it succeeds, waiting out outages;
        ``False`` if a stop request came first."""
        while True:
            try:
                step()
            except InfrastructureError as exc:
                if self._wait_out(outage, exc, stop, stats, doing):
                    return False
            else:
                return True

    def _give_back(self, message: Message) -> None:
        """Hand ``message`` back uncommitted, as far as the bus can be reached: a backend
        that cannot be told lets the claim expire (lease, rebalance) instead."""
        try:
            self._release(message)
        except InfrastructureError as exc:
            log.warning(
                "could not hand back %s (%s); its claim will expire", message.message_id, exc
            )

    def _sleep(self, seconds: float, stop: threading.Event | None) -> bool:
        """Sleep, waking early on stop/close; ``True`` if woken by a stop request."""
        deadline = time.monotonic() + seconds
        while True:
            if self._should_stop(stop):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._closing.wait(min(left, 0.05))

    def _dead_letter(self, message: Message, exc: BaseException, attempts: int) -> None:
        """Publish the original bytes to ``dlq.<topic>`` with provenance headers."""
        error = " ".join(f"{type(exc).__name__}: {exc}".split())[:_MAX_ERROR_CHARS]
        trace = "".join(traceback.format_exception(exc))[-_MAX_TRACEBACK_CHARS:]
        headers = {
            **{str(k): str(v) for k, v in message.headers.items()},
            H_SOURCE_TOPIC: message.topic,
            H_PARTITION: str(message.partition),
            H_OFFSET: str(message.offset),
            H_MESSAGE_ID: message.message_id,
            H_GROUP: message.group,
            H_CONSUMER: message.consumer,
            H_ERROR: error,
            H_TRACEBACK: trace,
            H_ATTEMPTS: str(attempts),
            H_FAILED_AT: datetime.now(UTC).isoformat(),
        }
        log.error("dead-lettering %s after %d attempt(s): %s", message.message_id, attempts, error)
        self._publish(dlq_topic(message.topic), message.key, message.value, headers)
