"""The gateway's outbox: a dataset is listed as complete only once it has been announced.

An upload touches two systems that can fail independently, the object store and the bus.
The order makes every outcome safe (docs/architecture.md, rule 11):

1. the raw files (``datasets/<id>/train.csv``, ``test.csv``);
2. the outbox entry ``outbox/<id>.json``: the ``dataset-uploaded`` envelope and the
   dataset's metadata, i.e. everything needed to announce it later;
3. the ``dataset-uploaded`` event on the bus;
4. ``datasets/<id>/meta.json``, the completion marker the listing reads;
5. the outbox entry is removed.

A failure before 2 leaves unlisted files nobody was promised (the client got an error). A
failure after 2 leaves an entry that :meth:`Outbox.reconcile` finishes: it publishes the
same envelope again (same ``event_id``, so a consumer that already saw it skips it), writes
the marker and removes the entry. The gateway runs it at start and every
``gateway.reconcile_seconds`` (:class:`Reconciler`), so a dataset stored while the broker was
down is announced once the broker is back, and a listed dataset has always been announced.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from flts.datasets import meta_key
from flts.events import DATASET_UPLOADED, DatasetUploadedEvent, decode, encode
from flts.exceptions import EventValidationError, InfrastructureError
from flts.services.context import ServiceContext

log = logging.getLogger(__name__)

OUTBOX_ROOT = "outbox"


def entry_key(dataset_id: str) -> str:
    """The outbox entry of a dataset not announced yet."""
    return f"{OUTBOX_ROOT}/{dataset_id}.json"


class Outbox:
    """Records, announces and completes datasets in the order of the module docstring."""

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()  # announced by a request right now: not reconciled

    def record(self, event: DatasetUploadedEvent, meta: dict[str, Any]) -> None:
        """Step 2: the entry that lets a later pass announce the stored files."""
        document = {"event": json.loads(encode(event)), "meta": meta}
        self.context.store.put_json(entry_key(event.payload.dataset_id), document)

    def announce(self, event: DatasetUploadedEvent, meta: dict[str, Any]) -> None:
        """Steps 3-5 for one dataset; a bus or store error propagates and leaves the entry
        for the reconciler."""
        dataset_id = event.payload.dataset_id
        with self._lock:
            self._in_flight.add(dataset_id)
        try:
            self._complete(event, meta)
        finally:
            with self._lock:
                self._in_flight.discard(dataset_id)

    def _complete(self, event: DatasetUploadedEvent, meta: dict[str, Any]) -> None:
        store = self.context.store
        dataset_id = event.payload.dataset_id
        self.context.bus.publish(DATASET_UPLOADED, event)
        store.put_json(meta_key(dataset_id), meta)  # listed from now on
        store.delete(entry_key(dataset_id))

    def pending(self) -> list[str]:
        """Dataset ids with an outbox entry, oldest first (ids sort by upload time)."""
        prefix = f"{OUTBOX_ROOT}/"
        return [
            key.removeprefix(prefix).removesuffix(".json")
            for key in self.context.store.list(OUTBOX_ROOT)
            if key.endswith(".json")
        ]

    def reconcile(self) -> list[str]:
        """Announce every stored dataset whose announcement has not completed; return the
        ids completed now. Stops at the first outage (the next pass goes on from there)."""
        store = self.context.store
        done: list[str] = []
        for dataset_id in self.pending():
            with self._lock:
                if dataset_id in self._in_flight:
                    continue
            key = entry_key(dataset_id)
            try:
                document = store.get_json(key)
            except KeyError:
                continue  # completed meanwhile by the request that recorded it
            except ValueError as exc:
                log.error("outbox entry %s is damaged and stays for inspection: %s", key, exc)
                continue
            try:
                event = decode(json.dumps(document["event"]).encode())
                meta = document["meta"]
                if not isinstance(event, DatasetUploadedEvent) or not isinstance(meta, dict):
                    raise EventValidationError("not a dataset-uploaded entry")
            except (EventValidationError, KeyError, TypeError, ValueError) as exc:
                log.error("outbox entry %s is damaged and stays for inspection: %s", key, exc)
                continue
            if store.exists(meta_key(dataset_id)):
                store.delete(key)  # announced and listed; only the clean-up was missing
                continue
            self._complete(event, meta)
            log.info("announced dataset %s from the outbox", dataset_id)
            done.append(dataset_id)
        return done


class Reconciler:
    """Runs :meth:`Outbox.reconcile` at start and every ``interval`` seconds in a thread."""

    def __init__(self, outbox: Outbox, interval: float) -> None:
        self.outbox = outbox
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[str]:
        """One pass; an outage or any other error is logged and retried at the next pass."""
        try:
            return self.outbox.reconcile()
        except InfrastructureError as exc:
            log.warning("outbox not reconciled (retrying in %.0fs): %s", self.interval, exc)
        except Exception:
            log.exception("outbox reconciliation failed; retrying in %.0fs", self.interval)
        return []

    def start(self) -> None:
        def loop() -> None:
            while True:
                self.run_once()
                if self._stop.wait(self.interval):
                    return

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name="flts-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
