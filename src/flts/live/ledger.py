"""The forecast ledger: every forecast a replica served, recorded so it can be scored once its
actual arrives (``flts worker monitor``).

The hot path only appends a reference to the answer it already built (no copy, no I/O); a
background thread turns what gathered into one append-only Parquet object every
``live.ledger_flush_seconds`` (docs/architecture.md, rule 17)::

    ledger/<yyyy-mm-dd>/<written at>-<replica>-<random>.parquet

One row per forecast step: ``identifier``, ``run_id``, ``model_type``, ``config_hash``,
``issued_at`` (when it was served), ``step`` (1-based), ``time`` (the target time), one column
per target, and ``<target>:lower:<level>`` / ``<target>:upper:<level>`` for the interval
levels the request asked for. ``live.ledger_sample`` keeps a random share of the forecasts.
A store outage keeps up to ``live.ledger_max_pending`` forecasts in memory for the next
flush; past that the oldest are dropped and counted, never the serving path blocked.
"""

from __future__ import annotations

import io
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from flts.storage import ObjectStore

LEDGER_ROOT = "ledger"

log = logging.getLogger(__name__)

#: (served at, UTC nanoseconds; the answer as the API built it)
_Entry = tuple[int, dict[str, Any]]


class ForecastLedger:
    """Collects served answers and writes them in batches (see module doc)."""

    def __init__(
        self,
        store: ObjectStore,
        replica_id: str,
        targets: tuple[str, ...],
        time_column: str = "time",
        *,
        sample: float = 1.0,
        flush_seconds: float = 5.0,
        max_pending: int = 100_000,
    ) -> None:
        self.store = store
        self.replica_id = replica_id
        self.targets = targets
        self.time_column = time_column
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

    def record(self, answer: dict[str, Any]) -> None:
        """Remember one answer (row form, tensor form or one item of a batch); on the event
        loop, so only an append: the answer is never mutated after it is serialised."""
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
        was nothing, or the store failed: the entries then wait for the next flush)."""
        with self._flushing:
            # Swap, not copy: an append on the event loop lands in one list or the other.
            entries, self._pending = self._pending, []
            if not entries:
                return None
            frame = ledger_frame(entries, self.targets, self.time_column)
            stamp = datetime.now(UTC)
            key = (
                f"{LEDGER_ROOT}/{stamp:%Y-%m-%d}/{stamp:%Y%m%dT%H%M%S%fZ}-"
                f"{self.replica_id}-{uuid.uuid4().hex[:8]}.parquet"
            )
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            try:
                self.store.put_atomic(key, buffer.getvalue())
            except Exception:
                log.exception(
                    "writing %d forecasts to the ledger failed; kept for later", len(entries)
                )
                self._requeue(entries)
                return None
            self.written += len(entries)
            return key

    def _requeue(self, entries: list[_Entry]) -> None:
        pending = entries + self._pending
        overflow = len(pending) - self.max_pending
        if overflow > 0:
            self.dropped += overflow
            pending = pending[overflow:]
        self._pending = pending


def ledger_frame(
    entries: list[_Entry], targets: tuple[str, ...], time_column: str = "time"
) -> pd.DataFrame:
    """The ledger rows of ``entries`` (see module doc), one per forecast step."""
    rows = [
        row for issued, answer in entries for row in _rows(issued, answer, targets, time_column)
    ]
    frame = pd.DataFrame.from_records(rows)
    frame["issued_at"] = pd.to_datetime(frame["issued_at"], unit="ns")
    frame["time"] = pd.to_datetime(frame["time"])
    return frame


def _rows(
    issued: int, answer: dict[str, Any], targets: tuple[str, ...], time_column: str
) -> Iterator[dict[str, Any]]:
    model = answer["model"]
    lineage = {
        "identifier": model["identifier"],
        "run_id": model["run_id"],
        "model_type": model["model_type"],
        "config_hash": model["config_hash"],
        "issued_at": issued,
    }
    if "times" in answer:  # the tensor form: times[i][step], forecast[i][step][target]
        bands = answer.get("intervals", {})
        for i, times in enumerate(answer["times"]):
            for step, when in enumerate(times):
                row = {**lineage, "step": step + 1, "time": when}
                row.update(zip(targets, answer["forecast"][i][step], strict=True))
                for level, band in bands.items():
                    for t, target in enumerate(targets):
                        row[f"{target}:lower:{level}"] = band["lower"][i][step][t]
                        row[f"{target}:upper:{level}"] = band["upper"][i][step][t]
                yield row
        return
    bands = answer.get("intervals", {})
    for step, record in enumerate(answer["forecast"]):
        row = {**lineage, "step": step + 1, "time": record[time_column]}
        row.update((target, record[target]) for target in targets)
        for level, records in bands.items():
            for target in targets:
                lower, upper = records[step][target]
                row[f"{target}:lower:{level}"] = lower
                row[f"{target}:upper:{level}"] = upper
        yield row
