"""``memory://``: an in-process bus for tests and single-process runs.

``memory://`` gives a private broker; ``memory://NAME`` a broker shared by every bus opened
with that name in this process (so a "reopened" bus sees committed offsets, like a durable
backend would). Nothing survives the process. Claims are held until commit, release or the
owning bus closing, so a stopped consumer's message is redelivered to the next one. A record
whose fields do not have their types (only code that bypasses ``publish`` can store one) is
delivered with its defect and dead-lettered, like on every backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from flts.bus.base import (
    Bus,
    IdempotencyStore,
    Lag,
    MemoryIdempotencyStore,
    Message,
    stored_fields,
)


@dataclass(frozen=True)
class _Record:
    seq: int  # broker-wide publish order, to serve several topics oldest first
    key: str
    value: bytes
    headers: Mapping[str, str]


@dataclass
class _Group:
    watermark: dict[str, int] = field(default_factory=dict)  # every offset below is done
    done: set[tuple[str, int]] = field(default_factory=set)  # done above the watermark
    claims: dict[tuple[str, int], int] = field(default_factory=dict)  # -> owning bus id
    deliveries: dict[tuple[str, int], int] = field(default_factory=dict)


class _Broker:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.logs: dict[str, list[_Record]] = {}
        self.groups: dict[str, _Group] = {}
        self.seq = 0
        self.processed = MemoryIdempotencyStore()


_NAMED: dict[str, _Broker] = {}
_NAMED_LOCK = threading.Lock()


class MemoryBus(Bus):
    """Thread-safe in-memory bus; see the module docstring for sharing by name."""

    def __init__(self, name: str = "") -> None:
        super().__init__()
        if name:
            with _NAMED_LOCK:
                self._broker = _NAMED.setdefault(name, _Broker())
        else:
            self._broker = _Broker()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        return cls(url.split("://", 1)[1].strip("/"), **options)

    def _publish(self, topic: str, key: str, value: bytes, headers: Mapping[str, str]) -> None:
        self._check_open()
        with self._broker.cond:
            self._broker.seq += 1
            record = _Record(self._broker.seq, key, value, dict(headers))
            self._broker.logs.setdefault(topic, []).append(record)
            self._broker.cond.notify_all()

    def _poll(
        self, topics: Sequence[str], group: str, consumer: str, timeout: float
    ) -> Message | None:
        deadline = time.monotonic() + timeout
        b = self._broker
        with b.cond:
            while True:
                self._check_open()
                state = b.groups.setdefault(group, _Group())
                found = min(
                    (c for t in topics if (c := self._candidate(t, state)) is not None),
                    default=None,
                    key=lambda c: c[2].seq,
                )
                if found is not None:
                    topic, offset, record = found
                    state.claims[topic, offset] = id(self)
                    count = state.deliveries[topic, offset] = (
                        state.deliveries.get((topic, offset), 0) + 1
                    )
                    key, value, headers, defect = stored_fields(
                        record.key, record.value, record.headers
                    )
                    return Message(
                        topic, key, value, headers, offset,
                        group=group, consumer=consumer, delivery_count=count, defect=defect,
                    )  # fmt: skip
                left = deadline - time.monotonic()
                if left <= 0 or self._closing.is_set():
                    return None
                b.cond.wait(left)

    def _candidate(self, topic: str, state: _Group) -> tuple[str, int, _Record] | None:
        """First unclaimed, undone record whose key has no earlier record in flight."""
        state.watermark.setdefault(topic, 0)
        busy: set[str] = set()
        log = self._broker.logs.get(topic, [])
        for offset in range(state.watermark[topic], len(log)):
            record = log[offset]
            if (topic, offset) in state.done:
                continue
            if (topic, offset) in state.claims:
                busy.add(record.key)
            elif record.key not in busy:
                return topic, offset, record
        return None

    def _commit(self, message: Message) -> None:
        self._check_open()
        with self._broker.cond:
            state = self._broker.groups[message.group]
            position = (message.topic, message.offset)
            state.claims.pop(position, None)
            state.deliveries.pop(position, None)
            state.done.add(position)
            mark = state.watermark[message.topic]
            while (message.topic, mark) in state.done:
                state.done.discard((message.topic, mark))
                mark += 1
            state.watermark[message.topic] = mark
            self._broker.cond.notify_all()

    def _release(self, message: Message) -> None:
        with self._broker.cond:  # a hand-back is not a failed delivery: undo its count
            state = self._broker.groups[message.group]
            position = (message.topic, message.offset)
            if state.claims.pop(position, None) is not None:
                state.deliveries[position] = max(state.deliveries.get(position, 1) - 1, 0)
            self._broker.cond.notify_all()

    def _close(self) -> None:
        with self._broker.cond:  # claims of this bus go back to the group
            for state in self._broker.groups.values():
                for position in [p for p, owner in state.claims.items() if owner == id(self)]:
                    del state.claims[position]
            self._broker.cond.notify_all()

    def _idempotency_store(self) -> IdempotencyStore:
        return self._broker.processed  # shared by name, like the offsets

    def _read(self, topic: str, limit: int) -> list[Message]:
        with self._broker.cond:
            log = self._broker.logs.get(topic, [])
            start = max(0, len(log) - limit)
            return [
                Message(topic, *stored_fields(r.key, r.value, r.headers)[:3], offset)
                for offset, r in enumerate(log[start:], start)
            ]

    def _topics(self) -> list[str]:
        with self._broker.cond:
            return sorted(self._broker.logs)

    def pending(self, group: str, topic: str) -> int:
        with self._broker.cond:
            state = self._broker.groups.get(group, _Group())
            total = len(self._broker.logs.get(topic, []))
            done = sum(1 for t, _ in state.done if t == topic)
            return total - state.watermark.get(topic, 0) - done

    def lag(self, group: str | None = None) -> list[Lag]:
        with self._broker.cond:
            names = sorted(self._broker.groups) if group is None else [group]
            rows = []
            for name in names:
                state = self._broker.groups.get(name, _Group())
                for topic in sorted(state.watermark):
                    in_flight = sum(1 for t, _ in state.claims if t == topic)
                    rows.append(Lag(name, topic, self.pending(name, topic), in_flight))
            return rows
