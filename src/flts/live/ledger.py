"""The forecast ledger: every forecast a replica served, recorded so it can be scored once its
actual arrives (``flts worker monitor``).

The hot path only appends the answer's bytes, the very bytes sent to the client, and the time
(no copy, no conversion, no I/O); a background thread writes what gathered as one append-only
gzip'd JSON-lines object every ``live.ledger_flush_seconds`` (docs/architecture.md, rule 17)::

    ledger/<yyyy-mm-dd>/<written at>-<replica>-<random>.jsonl.gz

one line per answer: ``{"issued_at": <UTC ns>, "answer": <the answer as served>}``, where the
answer is a single forecast, a row-form batch (``results``) or a tensor answer. Turning
answers into rows (:func:`ledger_frame`, one per forecast step: ``identifier``, ``run_id``,
``model_type``, ``config_hash``, ``issued_at``, ``step``, ``time``, one column per target and
``<target>:lower:<level>`` / ``<target>:upper:<level>``) is the monitor's work, in its own
process: the replica's writer only joins bytes and compresses (zlib releases the GIL), so it
never competes with the event loop for the interpreter. ``live.ledger_sample`` keeps a
random share of the answers. A store outage keeps up to ``live.ledger_max_pending`` answers
in memory for the next flush; past that the oldest are dropped and counted, never the serving
path blocked.
"""

from __future__ import annotations

import gzip
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from flts.storage import ObjectStore

LEDGER_ROOT = "ledger"

log = logging.getLogger(__name__)

SUFFIX = ".jsonl.gz"

#: (served at, UTC nanoseconds; the answer's JSON bytes as sent)
_Entry = tuple[int, bytes]


class ForecastLedger:
    """Collects served answers and writes them in batches (see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        replica_id: str,
        *,
        sample: float = 1.0,
        flush_seconds: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.sample = sample
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.dropped = 0
        self.written = 0
        self._pending: list[_Entry] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flushing = threading.Lock()

    # ------------------------------------------------------------------ hot path

    def record(self, answer: bytes) -> None:
        """Remember one answer's JSON bytes; on the event loop, so only an append."""
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        self._pending.append((time.time_ns(), answer))

    # ------------------------------------------------------------------ flushing

    def start(self) -> ForecastLedger:
        self._thread = threading.Thread(target=self._run, name="ledger-flush", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the flusher and write what is left (a replica shutting down loses nothing it
        can still write)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def flush(self) -> str | None:
        """Write everything recorded so far as one object; returns its key (None when there
        was nothing, or the store failed: the answers then wait for the next flush)."""
        with self._flushing:
            # Swap, not copy: an append on the event loop lands in one list or the other.
            entries, self._pending = self._pending, []
            if not entries:
                return None
            lines = b"".join(
                b'{"issued_at":%d,"answer":%b}\n' % (issued, answer) for issued, answer in entries
            )
            stamp = datetime.now(UTC)
            key = (
                f"{LEDGER_ROOT}/{stamp:%Y-%m-%d}/{stamp:%Y%m%dT%H%M%S%fZ}-"
                f"{self.replica_id}-{uuid.uuid4().hex[:8]}{SUFFIX}"
            )
            try:
                self.store.put_atomic(key, gzip.compress(lines, compresslevel=1))
            except Exception:
                log.exception("writing %d answers to the ledger failed; kept", len(entries))
                self._requeue(entries)
                return None
            self.written += len(entries)
            return key

    def _requeue(self, entries: list[_Entry]) -> None:
        """Keep unwritten answers for the next flush, the newest ``max_pending`` at most."""
        pending = entries + self._pending
        overflow = len(pending) - self.max_pending
        if overflow > 0:
            self.dropped += overflow
            pending = pending[overflow:]
        self._pending = pending


def read_ledger(
    data: bytes,
    targets: tuple[str, ...],
    time_column: str = "time",
    keep: Callable[[str], bool] | None = None,
) -> pd.DataFrame:
    """The rows (:func:`ledger_frame`) of one ledger object's bytes; with ``keep``, only the
    answers of the identifiers it accepts (a monitor shard's), dropped before any row is built
    so a shard pays the parse of the others' answers, not their rows."""
    entries: list[tuple[int, dict[str, Any]]] = []
    for line in gzip.decompress(data).splitlines():
        if not line:
            continue
        document = orjson.loads(line)
        issued, answer = int(document["issued_at"]), document["answer"]
        for item in answer.get("results", [answer]):  # a row-form batch: one per item
            if keep is None or keep(item["model"]["identifier"]):
                entries.append((issued, item))
    return ledger_frame(entries, targets, time_column)


def ledger_frame(
    entries: list[tuple[int, dict[str, Any]]], targets: tuple[str, ...], time_column: str = "time"
) -> pd.DataFrame:
    """The ledger rows of ``entries`` (see module doc), one per forecast step, built column by
    column (a list per column, no dict per row)."""
    names = ("identifier", "run_id", "model_type", "config_hash")
    lineage: dict[str, list[Any]] = {name: [] for name in names}
    issued: list[int] = []
    steps: list[int] = []
    times: list[str] = []
    values: dict[str, list[float]] = {target: [] for target in targets}
    bands: dict[str, list[float | None]] = {}
    rows = 0

    def band(name: str, value: float) -> None:
        column = bands.get(name)
        if column is None:  # a level no earlier row asked for
            column = bands[name] = [None] * rows
        column.append(value)

    for served_at, answer in entries:
        model = answer["model"]
        lines = [model[name] for name in names]
        intervals = answer.get("intervals", {})
        if "times" in answer:  # the tensor form: times[i][step], forecast[i][step][target]
            windows = [
                (i, step, when)
                for i, row in enumerate(answer["times"])
                for step, when in enumerate(row)
            ]
        else:
            windows = [(0, step, r[time_column]) for step, r in enumerate(answer["forecast"])]
        for i, step, when in windows:
            for name, line in zip(names, lines, strict=True):
                lineage[name].append(line)
            issued.append(served_at)
            steps.append(step + 1)
            times.append(when)
            if "times" in answer:
                for t, target in enumerate(targets):
                    values[target].append(answer["forecast"][i][step][t])
                for level, bounds in intervals.items():
                    for t, target in enumerate(targets):
                        band(f"{target}:lower:{level}", bounds["lower"][i][step][t])
                        band(f"{target}:upper:{level}", bounds["upper"][i][step][t])
            else:
                record = answer["forecast"][step]
                for target in targets:
                    values[target].append(record[target])
                for level, records in intervals.items():
                    for target in targets:
                        lower, upper = records[step][target]
                        band(f"{target}:lower:{level}", lower)
                        band(f"{target}:upper:{level}", upper)
            rows += 1
            for column in bands.values():  # levels this row did not ask for
                if len(column) < rows:
                    column.append(None)
    return pd.DataFrame(
        {
            **lineage,
            "issued_at": np.array(issued, dtype=np.int64).view("datetime64[ns]"),
            "step": np.array(steps, dtype=np.int64),
            "time": pd.to_datetime(times, format="ISO8601"),
            **{t: np.array(v, dtype=np.float64) for t, v in values.items()},
            **{c: np.array(v, dtype=np.float64) for c, v in bands.items()},
        }
    )
