"""The promotion index: one small object that says which pointers changed
(docs/architecture.md, rules 7 and 13).

Replicas of a fleet must learn of every promotion without listing ``model-promotion/`` (the
pointers *and* every history entry of every identifier) and reading every pointer on each
poll. So whoever writes a pointer (:meth:`~flts.promotion.PromotionStore.commit`, which
promotions, rollbacks and manual promotions all go through) also records it in
``model-promotion-index.json``::

    {"version": 1, "sequence": 42,
     "entries": {"<identifier>": {"tag": "<sha256 of the pointer's bytes>",
                                  "run_id": "<run>", "sequence": 41,
                                  "champion": {"model_type": "RIDGE", "config_hash": "...",
                                               "promoted_at": "...", "nrmse": 0.31}}, ...}}

``tag`` is the same change marker a replica computes from the pointer itself
(:meth:`~flts.promotion.PromotionStore.etag`), so the index and a full listing agree on what
"unchanged" means. A replica reads the index with a conditional read
(:meth:`~flts.storage.ObjectStore.get_if_changed`: ``If-None-Match`` on S3, a ``304`` when
nothing changed), so an unchanged fleet costs one small request per poll whatever its size,
and it then reads only the pointers whose entry changed.

The pointer stays the one source of truth; the index is a hint and may lag:

* it is updated by compare-and-swap after the pointer, retried on a lost race; each attempt
  re-reads the pointer, so the last writer of a pointer leaves its newest state in the index
  even when two writers' updates interleave;
* a writer that crashes between pointer and index leaves the index behind: a repeat of that
  promotion (the evaluator and the admin API retry a failed commit) writes it, and replicas
  list every pointer at start, every ``serving.full_listing_seconds`` and whenever the index
  is missing or damaged (:mod:`flts.api.watcher`);
* a missing or damaged index is rebuilt from a listing by the next writer.

``champion`` repeats the few pointer fields a fleet overview shows
(:mod:`flts.fleet.summary`), so ``flts status`` and the dashboard page through thousands of
stations from this one object instead of a read per pointer.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flts.storage import ObjectStore

if TYPE_CHECKING:
    from flts.promotion.pointer import PromotionStore

log = logging.getLogger(__name__)

#: Beside ``model-promotion/``, not in it: every name inside is a possible identifier.
INDEX_KEY = "model-promotion-index.json"
#: Compare-and-swap attempts of one update before it is left to the repair paths.
_ATTEMPTS = 10


class ChampionSummary(BaseModel):
    """What a fleet overview shows of a pointer, copied from it when the entry is written."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_type: str
    config_hash: str
    promoted_at: datetime
    nrmse: float | None = None
    """The champion's evaluation NRMSE (test split, original units)."""


class IndexEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tag: str
    """sha256 of the pointer's bytes (:meth:`PromotionStore.etag`)."""
    run_id: str | None = None
    sequence: int = 0
    """The index's sequence number when this entry last changed."""
    champion: ChampionSummary | None = None
    """The pointer's champion in brief; ``None`` for a damaged pointer (or an entry written
    before the index carried it: readers then read the pointer)."""


class IndexDocument(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    sequence: int = 0
    entries: dict[str, IndexEntry] = Field(default_factory=dict)


class DamagedIndexError(ValueError):
    """The index object exists but is not an index: readers fall back to a listing."""


@dataclass(frozen=True)
class IndexRead:
    """One version of the index: its store version tag, and identifier -> pointer tag."""

    tag: str
    entries: dict[str, str]
    sequence: int


def pointer_tag(data: bytes) -> str:
    """The change marker of a pointer's bytes (shared by the index and the pointer reads)."""
    return hashlib.sha256(data).hexdigest()


def read_index(store: ObjectStore, since: str | None = None) -> IndexRead | None:
    """The index if its version is not ``since`` (``None``: unchanged, one small request);
    ``KeyError`` when there is none, :class:`DamagedIndexError` when it is not readable."""
    found = store.get_if_changed(INDEX_KEY, since)
    if found is None:
        return None
    document = _parse(found.data)
    return IndexRead(
        found.tag, {name: entry.tag for name, entry in document.entries.items()}, document.sequence
    )


def read_index_document(store: ObjectStore) -> IndexDocument:
    """The whole index (one read); ``KeyError`` when there is none,
    :class:`DamagedIndexError` when it is not readable."""
    return _parse(store.get(INDEX_KEY))


def _parse(data: bytes) -> IndexDocument:
    try:
        return IndexDocument.model_validate_json(data)
    except ValidationError as exc:
        raise DamagedIndexError(
            f"{INDEX_KEY}: {exc.error_count()} problem(s): {exc.errors()[0]['msg']}"
        ) from exc


def note_pointer(pointers: PromotionStore, identifier: str) -> bool:
    """Record ``identifier``'s pointer as it is now in the index, by compare-and-swap;
    ``False`` if every attempt lost its race (the repair paths then catch up). A missing or
    damaged index is rebuilt from a listing of every pointer first."""
    store = pointers.store
    for attempt in range(_ATTEMPTS):
        rebuilt = True
        try:
            version = store.get_versioned(INDEX_KEY)
        except KeyError:
            tag, document = None, _rebuild(pointers)
        else:
            tag = version.tag
            try:
                document = _parse(version.data)
                rebuilt = False
            except DamagedIndexError as exc:
                log.warning("rebuilding the promotion index: %s", exc)
                document = _rebuild(pointers)
        updated = _with_pointer(document, pointers, identifier)
        if updated == document and not rebuilt:
            return True  # already says so (a repeat, or another writer read it for us)
        data = updated.model_dump_json().encode()
        if store.put_if_match(INDEX_KEY, data, tag):
            return True
        time.sleep(random.uniform(0.0, 0.01 * (attempt + 1)))  # spread the racing writers
    log.warning(
        "the promotion index did not take %r after %d attempts; replicas catch up at their "
        "next full listing",
        identifier,
        _ATTEMPTS,
    )
    return False


def _with_pointer(
    document: IndexDocument, pointers: PromotionStore, identifier: str
) -> IndexDocument:
    """``document`` with ``identifier``'s entry set from its pointer as stored right now."""
    entries = dict(document.entries)
    entry = _entry(pointers, identifier, document.sequence + 1)
    old = entries.get(identifier)
    if entry is None:
        if old is None:
            return document
        del entries[identifier]
    elif old is not None and old.model_copy(update={"sequence": entry.sequence}) == entry:
        return document
    else:
        entries[identifier] = entry
    return IndexDocument(sequence=document.sequence + 1, entries=entries)


def _entry(pointers: PromotionStore, identifier: str, sequence: int) -> IndexEntry | None:
    key = pointers.pointer_key(identifier)
    try:
        data = pointers.store.get(key)
    except KeyError:
        return None
    promotion = pointers.parse_record(identifier, key, data)
    if promotion is None:
        return IndexEntry(tag=pointer_tag(data), sequence=sequence)
    return IndexEntry(
        tag=pointer_tag(data),
        run_id=promotion.run_id,
        sequence=sequence,
        champion=ChampionSummary(
            model_type=promotion.model_type,
            config_hash=promotion.config_hash,
            promoted_at=promotion.promoted_at,
            nrmse=promotion.scores.get("nrmse"),
        ),
    )


def _rebuild(pointers: PromotionStore) -> IndexDocument:
    """An index of every pointer, from a listing (the rare repair; costs one read each)."""
    entries = {}
    for identifier in pointers.identifiers():
        entry = _entry(pointers, identifier, 1)
        if entry is not None:
            entries[identifier] = entry
    return IndexDocument(sequence=1, entries=entries)
