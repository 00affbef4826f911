"""``sqlite:///path/bus.db``: the embedded, durable default for one machine.

Several OS processes share one database file, each through its own connection. WAL mode
lets readers run beside the single writer; every state change is a short ``BEGIN IMMEDIATE``
transaction (the write lock is taken up front, so two consumers can never claim the same row),
and ``busy_timeout`` makes a process wait its turn instead of failing.

Paths follow SQLAlchemy (and so MLflow's tracking URIs): ``sqlite:///.flts/bus.db`` is
relative to the working directory, ``sqlite:////var/lib/flts/bus.db`` is absolute. Query
parameters tune the bus: ``lease_seconds``, ``poll_interval``, ``busy_timeout`` (seconds),
``synchronous`` (``full`` by default: a returned publish survives power loss).

Model (per consumer group and topic):

* ``messages`` is an append-only log; ``msg_offset`` (AUTOINCREMENT) is global publish order.
  Offsets become visible in order because SQLite has one writer at a time.
* ``group_offsets.committed`` is a low watermark: every message of the topic at or below it is
  done for the group. A new group starts at 0 and so sees the whole history.
* ``deliveries`` holds per-message state above the watermark: which consumer claimed it, until
  when (``lease_until``), how often it was delivered, and whether it is done. A claim whose
  lease ran out (its consumer died) is claimable again; a live consumer renews its lease while
  its handler runs, so a slow handler is not mistaken for a dead one.
* Per-key order: a message is not handed out while an earlier message with the same key is
  still undone for the group, so one station's events are processed one at a time, in order,
  while other stations proceed in parallel.
* ``processed_events`` records event ids a group handled (idempotency), durably.

Retention (:meth:`SQLiteBus.prune`, run by ``flts gc``): a message is deleted once it is older
than the retention period *and* every group that reads its topic has committed past it; a
topic no group has read yet keeps everything. Dead letters (``dlq.*``, read by operators, not
groups) are kept unless asked for. ``msg_offset`` is AUTOINCREMENT, so offsets are never
reused after a delete; a group created later starts after the deleted history. Freed pages
are reused by SQLite; the file does not shrink without ``VACUUM``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

from flts.bus.base import H_RAW_HEADERS, Bus, IdempotencyStore, Lag, Message, stored_fields
from flts.events import DLQ_PREFIX
from flts.exceptions import BusError, ConfigurationError

log = logging.getLogger(__name__)

_RAW_HEADERS_CHARS = 2_000  # how much of unreadable headers a dead letter keeps

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    msg_offset INTEGER PRIMARY KEY AUTOINCREMENT,
    topic      TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      BLOB NOT NULL,
    headers    TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_topic ON messages (topic, msg_offset);
CREATE INDEX IF NOT EXISTS messages_by_key ON messages (topic, key, msg_offset);
CREATE TABLE IF NOT EXISTS group_offsets (
    group_name TEXT NOT NULL,
    topic      TEXT NOT NULL,
    committed  INTEGER NOT NULL,
    PRIMARY KEY (group_name, topic)
);
CREATE TABLE IF NOT EXISTS deliveries (
    group_name  TEXT NOT NULL,
    msg_offset  INTEGER NOT NULL,
    topic       TEXT NOT NULL,
    consumer    TEXT NOT NULL,
    lease_until REAL NOT NULL,
    attempts    INTEGER NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (group_name, msg_offset)
);
CREATE TABLE IF NOT EXISTS processed_events (
    group_name   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    processed_at REAL NOT NULL,
    PRIMARY KEY (group_name, event_id)
);
"""

# The next claimable message for a group across its topics: above the watermark, never
# delivered or with an expired lease, and no earlier undone message with the same key.
_CLAIM = """
SELECT m.msg_offset, m.topic, m.key, m.value, m.headers,
       CAST(COALESCE(d.attempts, 0) AS INTEGER)
FROM messages m
JOIN group_offsets g ON g.group_name = :group AND g.topic = m.topic
LEFT JOIN deliveries d ON d.group_name = :group AND d.msg_offset = m.msg_offset
WHERE m.topic IN ({topics})
  AND m.msg_offset > g.committed
  AND (d.msg_offset IS NULL OR (d.done = 0 AND d.lease_until <= :now))
  AND NOT EXISTS (
      SELECT 1 FROM messages p
      LEFT JOIN deliveries pd ON pd.group_name = :group AND pd.msg_offset = p.msg_offset
      WHERE p.topic = m.topic AND p.key = m.key
        AND p.msg_offset > g.committed AND p.msg_offset < m.msg_offset
        AND COALESCE(pd.done, 0) = 0)
ORDER BY m.msg_offset
LIMIT 1
"""

# Messages retention may delete: old enough, and consumed by every group reading the topic
# (a topic nobody reads yet keeps its messages); dead letters only when asked for.
_PRUNABLE = """
FROM messages m
WHERE m.created_at < :before
  AND ((substr(m.topic, 1, :dlq_len) != :dlq_prefix
        AND EXISTS (SELECT 1 FROM group_offsets g WHERE g.topic = m.topic)
        AND NOT EXISTS (SELECT 1 FROM group_offsets g
                        WHERE g.topic = m.topic AND g.committed < m.msg_offset))
       OR (:dead_letters AND substr(m.topic, 1, :dlq_len) = :dlq_prefix))
"""

# Old messages kept because a group has not consumed them: which groups hold them back.
_HELD_BACK = """
SELECT g.group_name, g.topic, COUNT(*) FROM messages m
JOIN group_offsets g ON g.topic = m.topic AND g.committed < m.msg_offset
WHERE m.created_at < :before
GROUP BY 1, 2 ORDER BY 1, 2
"""

_UNDONE = """
SELECT {what} FROM messages m
LEFT JOIN deliveries d ON d.group_name = ? AND d.msg_offset = m.msg_offset
WHERE m.topic = ? AND m.msg_offset > ? AND COALESCE(d.done, 0) = 0
"""


class SQLiteBus(Bus):
    """Durable multi-process bus on one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.05,
        busy_timeout: float = 10.0,
        synchronous: str = "full",
    ) -> None:
        super().__init__()
        if lease_seconds <= 0 or poll_interval <= 0 or busy_timeout < 0:
            raise ConfigurationError(
                "sqlite bus: lease_seconds and poll_interval must be > 0, busy_timeout >= 0"
            )
        if synchronous.lower() not in ("off", "normal", "full", "extra"):
            raise ConfigurationError(f"sqlite bus: unknown synchronous mode {synchronous!r}")
        self.path = Path(path)
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = float(poll_interval)
        self._lock = threading.RLock()  # one connection, shared by this process's threads
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            with self._tx() as db:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise BusError(f"cannot open sqlite bus at {self.path}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        parts = urlsplit(url)
        if parts.netloc or not parts.path.startswith("/") or parts.path == "/":
            raise ConfigurationError(
                f"sqlite bus URL {url!r} must look like sqlite:///relative/bus.db or "
                "sqlite:////absolute/bus.db (use memory:// for a throwaway bus)"
            )
        query: dict[str, Any] = dict(parse_qsl(parts.query))
        for name in ("lease_seconds", "poll_interval", "busy_timeout"):
            if name in query:
                try:
                    query[name] = float(query[name])
                except ValueError as exc:
                    raise ConfigurationError(f"sqlite bus: {name} must be a number") from exc
        unknown = set(query) - {"lease_seconds", "poll_interval", "busy_timeout", "synchronous"}
        if unknown:
            raise ConfigurationError(f"sqlite bus: unknown URL parameters {sorted(unknown)}")
        return cls(parts.path[1:], **{**query, **options})

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; SQLite errors become :class:`BusError`.

        Writes take the lock up front (``BEGIN IMMEDIATE``): a claim reads then updates, and
        upgrading a read lock later could deadlock two claimers instead of queueing them.
        """
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise BusError(f"sqlite bus {self.path}: {exc}") from exc

    # ------------------------------------------------------------------ primitives

    def _publish(self, topic: str, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO messages (topic, key, value, headers, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (topic, key, value, json.dumps(dict(headers)), time.time()),
            )

    def _poll(
        self, topics: Sequence[str], group: str, consumer: str, timeout: float
    ) -> Message | None:
        deadline = time.monotonic() + timeout
        while True:
            message = self._claim(topics, group, consumer)
            left = deadline - time.monotonic()
            if message is not None or left <= 0 or self._closing.is_set():
                return message
            self._closing.wait(min(self.poll_interval, left))

    def _claim(self, topics: Sequence[str], group: str, consumer: str) -> Message | None:
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT OR IGNORE INTO group_offsets (group_name, topic, committed) "
                "VALUES (?, ?, 0)",
                [(group, topic) for topic in topics],
            )
            sql = _CLAIM.format(topics=", ".join(f":{name}" for name in _numbered(topics)))
            row = db.execute(sql, {"group": group, "now": now, **_numbered(topics)}).fetchone()
            if row is None:
                return None
            offset, topic, key, value, headers, attempts = row
            db.execute(
                "INSERT INTO deliveries "
                "(group_name, msg_offset, topic, consumer, lease_until, attempts) "
                "VALUES (?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (group_name, msg_offset) DO UPDATE SET "
                "consumer = excluded.consumer, lease_until = excluded.lease_until, "
                "attempts = attempts + 1",
                (group, offset, topic, consumer, now + self.lease_seconds),
            )
        # The claim (and its delivery count) is committed before the row is even looked at:
        # a row this process cannot read, or a handler that kills it, still counts.
        key, value, headers, defect = _stored(key, value, headers)
        return Message(
            topic, key, value, headers, offset,
            group=group, consumer=consumer, delivery_count=attempts + 1, defect=defect,
        )  # fmt: skip

    def _commit(self, message: Message) -> None:
        with self._tx() as db:
            row = db.execute(
                "SELECT consumer FROM deliveries WHERE group_name = ? AND msg_offset = ?",
                (message.group, message.offset),
            ).fetchone()
            if row is not None and row[0] != message.consumer:
                log.warning(
                    "lease on %s expired before its commit; another consumer may have "
                    "processed it too (raise lease_seconds?)",
                    message.message_id,
                )
            db.execute(
                "UPDATE deliveries SET done = 1 WHERE group_name = ? AND msg_offset = ?",
                (message.group, message.offset),
            )
            self._advance(db, message.group, message.topic)

    def _advance(self, db: sqlite3.Connection, group: str, topic: str) -> None:
        """Move the watermark over the done prefix and forget deliveries below it."""
        (committed,) = db.execute(
            "SELECT committed FROM group_offsets WHERE group_name = ? AND topic = ?",
            (group, topic),
        ).fetchone()
        (first_undone,) = db.execute(
            _UNDONE.format(what="MIN(m.msg_offset)"), (group, topic, committed)
        ).fetchone()
        if first_undone is None:
            (mark,) = db.execute(
                "SELECT COALESCE(MAX(msg_offset), 0) FROM messages WHERE topic = ?", (topic,)
            ).fetchone()
        else:
            mark = first_undone - 1
        if mark > committed:
            db.execute(
                "UPDATE group_offsets SET committed = ? WHERE group_name = ? AND topic = ?",
                (mark, group, topic),
            )
            db.execute(
                "DELETE FROM deliveries WHERE group_name = ? AND topic = ? AND msg_offset <= ?",
                (group, topic, mark),
            )

    def _release(self, message: Message) -> None:
        with self._tx() as db:  # claimable at once, and the hand-back is not a delivery
            db.execute(
                "UPDATE deliveries SET lease_until = 0, attempts = MAX(attempts - 1, 0) "
                "WHERE group_name = ? AND msg_offset = ? AND consumer = ? AND done = 0",
                (message.group, message.offset, message.consumer),
            )

    @contextmanager
    def _keepalive(self, message: Message) -> Iterator[None]:
        """Renew the lease every third of ``lease_seconds`` while the handler runs."""
        finished = threading.Event()

        def renew() -> None:
            while not finished.wait(self.lease_seconds / 3):
                try:
                    with self._tx() as db:
                        db.execute(
                            "UPDATE deliveries SET lease_until = ? WHERE group_name = ? "
                            "AND msg_offset = ? AND consumer = ? AND done = 0",
                            (time.time() + self.lease_seconds, message.group,
                             message.offset, message.consumer),
                        )  # fmt: skip
                except BusError as exc:  # the commit will surface a persistent problem
                    log.warning("could not renew lease on %s: %s", message.message_id, exc)

        thread = threading.Thread(target=renew, name="flts-bus-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            finished.set()
            thread.join()

    def _close(self) -> None:
        with self._lock:
            self._db.close()

    def _idempotency_store(self) -> IdempotencyStore:
        return _ProcessedTable(self)

    # ------------------------------------------------------------------ operator reads

    def _read(self, topic: str, limit: int) -> list[Message]:
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT msg_offset, key, value, headers FROM messages WHERE topic = ? "
                "ORDER BY msg_offset DESC LIMIT ?",
                (topic, limit),
            ).fetchall()
        messages = []
        for offset, key, value, headers in reversed(rows):
            key, value, headers, defect = _stored(key, value, headers)
            messages.append(Message(topic, key, value, headers, offset, defect=defect))
        return messages

    def _topics(self) -> list[str]:
        with self._tx(write=False) as db:
            return [t for (t,) in db.execute("SELECT DISTINCT topic FROM messages ORDER BY 1")]

    def pending(self, group: str, topic: str) -> int:
        with self._tx(write=False) as db:
            row = db.execute(
                "SELECT committed FROM group_offsets WHERE group_name = ? AND topic = ?",
                (group, topic),
            ).fetchone()
            committed = row[0] if row else 0
            (count,) = db.execute(
                _UNDONE.format(what="COUNT(*)"), (group, topic, committed)
            ).fetchone()
        return int(count)

    def lag(self, group: str | None = None) -> list[Lag]:
        with self._tx(write=False) as db:
            pairs = db.execute(
                "SELECT group_name, topic FROM group_offsets "
                "WHERE ?1 IS NULL OR group_name = ?1 ORDER BY 1, 2",
                (group,),
            ).fetchall()
            now = time.time()
            in_flight = {
                (g, t): n
                for g, t, n in db.execute(
                    "SELECT group_name, topic, COUNT(*) FROM deliveries "
                    "WHERE done = 0 AND lease_until > ? GROUP BY 1, 2",
                    (now,),
                )
            }
        return [Lag(g, t, self.pending(g, t), in_flight.get((g, t), 0)) for g, t in pairs]

    # ------------------------------------------------------------------ retention

    def prune(
        self, before: float, *, dead_letters: bool = False, dry_run: bool = False
    ) -> PruneReport:
        """Delete messages created before ``before`` (UNIX time) that every group reading
        their topic has consumed (dead letters too with ``dead_letters``), and idempotency
        records as old; one transaction. ``dry_run`` only counts."""
        with self._tx(write=not dry_run) as db:
            return _prune(db, _Prune(before, dead_letters), dry_run=dry_run)


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`SQLiteBus.prune` deleted (or would delete): messages per topic, old
    idempotency records, and the old messages kept per ``(group, topic)`` not yet consumed."""

    messages: dict[str, int] = field(default_factory=dict)
    processed_events: int = 0
    held_back: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Prune:
    before: float
    dead_letters: bool

    @property
    def params(self) -> dict[str, Any]:
        return {
            "before": self.before,
            "dead_letters": int(self.dead_letters),
            "dlq_prefix": DLQ_PREFIX,
            "dlq_len": len(DLQ_PREFIX),
        }


def _prune(db: sqlite3.Connection, rule: _Prune, *, dry_run: bool) -> PruneReport:
    params = rule.params
    messages = {
        topic: int(n)
        for topic, n in db.execute(
            f"SELECT m.topic, COUNT(*) {_PRUNABLE} GROUP BY 1 ORDER BY 1", params
        )
    }
    held_back = {
        (group, topic): int(n)
        for group, topic, n in db.execute(_HELD_BACK, {"before": rule.before})
    }
    (events,) = db.execute(
        "SELECT COUNT(*) FROM processed_events WHERE processed_at < ?", (rule.before,)
    ).fetchone()
    if not dry_run:
        db.execute(
            f"DELETE FROM messages WHERE msg_offset IN (SELECT m.msg_offset {_PRUNABLE})", params
        )
        db.execute(
            "DELETE FROM deliveries WHERE msg_offset NOT IN (SELECT msg_offset FROM messages)"
        )
        # Redelivery of an event this old is impossible once its message is gone everywhere.
        db.execute("DELETE FROM processed_events WHERE processed_at < ?", (rule.before,))
    return PruneReport(messages=messages, processed_events=int(events), held_back=held_back)


class _ProcessedTable:
    """Idempotency store in the bus database, so it survives restarts like the offsets."""

    def __init__(self, bus: SQLiteBus) -> None:
        self._bus = bus

    def seen(self, group: str, event_id: str) -> bool:
        with self._bus._tx(write=False) as db:
            row = db.execute(
                "SELECT 1 FROM processed_events WHERE group_name = ? AND event_id = ?",
                (group, event_id),
            ).fetchone()
        return row is not None

    def mark(self, group: str, event_id: str) -> None:
        with self._bus._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO processed_events (group_name, event_id, processed_at) "
                "VALUES (?, ?, ?)",
                (group, event_id, time.time()),
            )


def _stored(key: object, value: object, headers: object) -> tuple[str, bytes, dict[str, str], str]:
    """One ``messages`` row's columns as message fields, never raising (see
    :func:`flts.bus.base.stored_fields`).

    SQLite keeps whatever type was written into a column, so a row written by anything but
    this module may hold a number or text where the value's bytes belong, or headers that
    are not JSON. Such a row is handed over with its defect named (its raw bytes as the value,
    the headers' text in ``x-dlq-raw-headers``) and the consumer dead-letters it.
    """
    text = headers.decode(errors="replace") if isinstance(headers, bytes) else headers
    problems: list[str] = []
    parsed: object = None
    if isinstance(text, str):
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError) as exc:
            problems.append(f"headers are not JSON ({exc})")
    else:
        problems.append(f"headers are {type(headers).__name__}, not JSON text")
    if problems:
        parsed = {H_RAW_HEADERS: str(text)[:_RAW_HEADERS_CHARS]}
    key, value, pairs, defect = stored_fields(key, value, parsed)
    if defect and not problems and H_RAW_HEADERS in pairs:  # JSON, but not string pairs
        pairs[H_RAW_HEADERS] = str(text)[:_RAW_HEADERS_CHARS]
    return key, value, pairs, "; ".join([*problems, *([defect] if defect else [])])


def _numbered(topics: Sequence[str]) -> dict[str, str]:
    """Named parameters ``:t0, :t1, ...`` for an ``IN`` list (sqlite3 cannot mix styles)."""
    return {f"t{i}": topic for i, topic in enumerate(topics)}
