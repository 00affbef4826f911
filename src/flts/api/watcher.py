"""Follow promotions: every replica learns of every promotion (docs/architecture.md, rule 7).

Two independent paths, either of which suffices:

* **Index polling**: every ``pointer_poll_seconds`` the watcher reads the promotion index
  (:mod:`flts.promotion.index`) with a conditional read: when nothing changed that is one
  small request (a ``304`` on S3), whatever the number of identifiers; when something did,
  it refreshes exactly the identifiers whose pointer marker differs from the one it applied,
  reading only their pointers. The index is a hint, the pointer the truth: at start, every
  ``full_listing_seconds`` and whenever the index is missing or damaged the watcher lists
  every pointer and compares each one's marker instead (what a lost index update needs).
  A part of the index the store lost is not that: its identifiers come without entries
  (:attr:`~flts.promotion.index.IndexRead.missing`), and the watcher lists the pointers once
  per hash the top names of that part and refreshes those of that part, so a lost part
  costs one listing per change of it (its next writer rebuilds it), not one per poll.
  It works with no bus at all and catches up after any outage; a marker is only recorded
  once the swap succeeded, so a failed load is retried at every poll.
* **Bus broadcast**: a thread consumes ``model-selected`` in the replica's own consumer group
  (``serve-<replica_id>``), so each replica receives every event and swaps within
  milliseconds. The event is only a wake-up call: the handler re-reads the pointer, which
  stays the single source of truth (a replayed old event cannot install an old model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from flts.api.holder import ModelHolder, RefreshOutcome
from flts.bus import Bus
from flts.events import MODEL_SELECTED, Event
from flts.promotion.index import part_of

log = logging.getLogger(__name__)

#: Seconds between attempts to (re)join the bus after it failed.
_BUS_RETRY_SECONDS = 2.0


class ChampionWatcher:
    """Background threads that keep a :class:`ModelHolder` on the current champions."""

    def __init__(
        self,
        holder: ModelHolder,
        *,
        poll_seconds: float,
        bus: Callable[[], Bus] | None = None,
        group: str | None = None,
        full_listing_seconds: float = 300.0,
    ) -> None:
        if bus is not None and not group:
            raise ValueError("a bus follower needs its consumer group")
        self.holder = holder
        self.poll_seconds = poll_seconds
        self._bus = bus
        self._group = group
        self._applied: dict[str, str | None] = {}
        self.full_listing_seconds = full_listing_seconds
        self._index_tag: str | None = None
        self._entries: dict[str, str] = {}
        self._missing: dict[str, str] = {}  # the index's lost parts -> the top's hash of each
        #: Lost index parts whose pointers were read, with the top's hash of each then.
        self._lost: dict[str, str] = {}
        self._listed_at: float | None = None  # monotonic time of the last full listing
        #: Completed polls (successful or not) and full listings among them.
        self.polls = 0
        self.full_listings = 0
        #: Listings made to read the pointers of lost index parts.
        self.lost_part_listings = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Start polling (the first poll runs at once) and, if configured, the bus follower."""
        self._stop.clear()
        self._threads = [threading.Thread(target=self._poll_loop, name="flts-pointer-poll")]
        if self._bus is not None:
            self._threads.append(threading.Thread(target=self._bus_loop, name="flts-bus-follow"))
        for thread in self._threads:
            thread.daemon = True  # never keep a dying process alive
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask both threads to stop and wait for them (a load in progress finishes first)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s did not stop within %.0f s", thread.name, timeout)
        self._threads = []

    # ------------------------------------------------------------------ polling

    def poll_once(self) -> None:
        """Refresh every owned identifier whose pointer changed since the last applied poll:
        from the index, or from a full listing when one is due or the index is unusable."""
        source = self.holder.source
        now = time.monotonic()
        due = self._listed_at is None or (
            self.full_listing_seconds > 0 and now - self._listed_at >= self.full_listing_seconds
        )
        try:
            # A listing re-reads the index whole: its entries are compared afterwards.
            read = source.index(None if due else self._index_tag)
        except (KeyError, ValueError) as exc:  # missing or damaged: the listing is the truth
            if self._index_tag is not None or self._listed_at is None:
                log.warning("promotion index unusable (%s): listing every pointer", exc)
            self._index_tag, self._entries, self._missing = None, {}, {}
            due = True
        else:
            if read is not None:
                self._index_tag, self._entries = read.tag, read.entries
                self._missing = read.missing
        if due:
            self._list_all()
            self._listed_at = now
            self.full_listings += 1
            self._lost = dict(self._missing)  # that listing read the lost parts' pointers too
            return
        for identifier, tag in self._entries.items():
            if self._stop.is_set():
                return
            if not self.holder.owns(identifier):
                continue
            self._apply(identifier, source.marker(identifier, tag))
        self._read_lost(self._missing)

    def _read_lost(self, missing: dict[str, str]) -> None:
        """Refresh the identifiers of the lost index parts (part -> the top's hash of it)
        not read yet at that hash: one listing, then those parts' pointers. The index has no
        entry for them, and a copy held of such a part was stale (a commit changed its
        hash), so without this a promotion there stayed unseen until the part is rebuilt."""
        new = {part for part, digest in missing.items() if self._lost.get(part) != digest}
        if not new:
            self._lost = {part: self._lost[part] for part in missing}
            return
        source = self.holder.source
        log.info("promotion index parts %s are lost: reading their pointers", sorted(new))
        for identifier in source.identifiers():
            if self._stop.is_set():
                return  # not recorded: the next poll lists again
            if part_of(identifier) not in new or not self.holder.owns(identifier):
                continue
            self._apply(identifier, source.etag(identifier))  # marker before pointer
        self.lost_part_listings += 1
        self._lost = dict(missing)

    def _list_all(self) -> None:
        """The repair path: list the identifiers with a pointer and read each one's marker."""
        source = self.holder.source
        for identifier in source.identifiers():
            if self._stop.is_set():
                return
            if not self.holder.owns(identifier):  # another shard's: not even its pointer
                continue
            self._apply(identifier, source.etag(identifier))  # marker before pointer

    def _apply(self, identifier: str, marker: str | None) -> None:
        """Refresh ``identifier`` unless ``marker`` (read before the pointer, so a change in
        between is never skipped) is the one last applied."""
        if identifier in self._applied and self._applied[identifier] == marker:
            return
        outcome = self.holder.refresh(identifier)
        if outcome is not RefreshOutcome.FAILED:
            self._applied[identifier] = marker

    def _poll_loop(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # storage hiccup: log and poll again later
                log.exception("polling the promotion pointers failed")
            self.polls += 1
            if self._stop.wait(self.poll_seconds):
                return

    # ------------------------------------------------------------------ bus

    def _on_model_selected(self, event: Event) -> None:
        # Never raise: a failed load is counted and retried by the poller; dead-lettering a
        # wake-up call would help nobody. Another shard's promotion is ignored (refresh
        # refuses it without reading the store).
        self.holder.refresh(event.identifier)

    def _bus_loop(self) -> None:
        assert self._bus is not None
        assert self._group is not None
        while not self._stop.is_set():
            try:
                self._bus().consume(
                    MODEL_SELECTED,
                    self._group,
                    self._on_model_selected,
                    stop=self._stop,
                    poll_timeout=0.5,
                )
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("following %s failed; retrying", MODEL_SELECTED)
            else:
                if not self._stop.is_set():
                    # consume returned without being stopped: the bus is closing.
                    return
            if self._stop.wait(_BUS_RETRY_SECONDS):
                return
