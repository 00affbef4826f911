"""The promotion index: a few small objects that say which pointers changed
(docs/architecture.md, rules 7 and 13).

Replicas of a fleet must learn of every promotion without listing ``model-promotion/`` (the
pointers *and* every history entry of every identifier) and reading every pointer on each
poll. So whoever writes a pointer (:meth:`~flts.promotion.PromotionStore.commit`, which
promotions, rollbacks and manual promotions all go through) also records it in the index.

The index is split by identifier into :data:`PARTS` parts (``shard_of(identifier, 256)``, the
hash :mod:`flts.shards` uses), so that a fleet of 100,000 stations, where some pointer
changes between any two polls, costs a reader one small part per change instead of the whole
index. A part, ``model-promotion-index/<pp>.json``::

    {"version": 1, "sequence": 42,
     "entries": {"<identifier>": {"tag": "<sha256 of the pointer's bytes>",
                                  "run_id": "<run>", "sequence": 41,
                                  "champion": {"model_type": "RIDGE", "config_hash": "...",
                                               "promoted_at": "...", "nrmse": 0.31}}, ...}}

and the top, ``model-promotion-index.json``, the sha256 of each part's bytes::

    {"version": 2, "sequence": 7, "parts": {"00": "<sha256>", "a3": "<sha256>", ...}}

``tag`` is the same change marker a replica computes from the pointer itself
(:meth:`~flts.promotion.PromotionStore.etag`), so the index and a full listing agree on what
"unchanged" means. A reader (:class:`IndexReader`) reads the top with a conditional read
(:meth:`~flts.storage.ObjectStore.get_if_changed`: ``If-None-Match`` on S3, a ``304`` when
nothing changed), so an unchanged fleet costs one small request per poll whatever its size;
when it changed, the reader reads the parts whose hash differs from the bytes it holds, and
a replica then reads only the pointers whose entry changed. ``champion`` repeats the few
pointer fields a fleet overview shows (:mod:`flts.fleet.summary`), so ``flts status`` and the
dashboard page through thousands of stations from the index instead of a read per pointer.

The pointer stays the one source of truth; the index is a hint and may lag:

* a part is updated by compare-and-swap after the pointer, then the top by compare-and-swap
  after the part, each retried on a lost race; each attempt re-reads what it records (the
  pointer, the part's bytes, read after the top), so the last writer leaves the newest state
  even when two writers' updates interleave;
* a writer that crashes between pointer and index leaves the index behind: a repeat of that
  promotion (the evaluator and the admin API retry a failed commit) writes it, and replicas
  list every pointer at start, every ``serving.full_listing_seconds`` and whenever the index
  is missing or damaged (:mod:`flts.api.watcher`);
* a missing or damaged part is rebuilt from a listing of the pointers by the next writer of
  that part, a missing or damaged top (or a one-object index of an earlier version) together
  with every part. A rebuild writes each part by compare-and-swap too, merged with the part
  as stored at that moment (an entry on which the two disagree is read again from its
  pointer), so a commit that lands between the rebuild's listing and its write of the part
  is never overwritten with the older entry the listing saw; the top it writes names the
  parts' bytes as they were then stored;
* a part the top names but the store lacks (deleted, or lost) costs readers no listing per
  poll. :class:`IndexReader` asks for each hash the top names for that part once. If the
  hash is the one of the copy it holds, that copy is the part as the top says and stands;
  otherwise any copy it holds is stale (a commit happened in that part since), so it drops
  it and reports the part in :attr:`IndexRead.missing` with the top's hash of it, without
  entries. Its callers then read that part's pointers once per hash, from one listing (a
  replica, :mod:`flts.api.watcher`; a fleet overview, :mod:`flts.fleet.summary`), and hold
  what they read until the hash changes: the commit that changes one of the part's
  pointers is the part's next writer, which rebuilds it (and so changes its hash). Readers
  never write (an inference replica may hold read-only credentials), and writers do not
  look for lost parts beyond their own (a listing of the parts per commit), since readers
  pay one listing per lost version of a part.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flts.shards import shard_of
from flts.storage import ObjectStore

if TYPE_CHECKING:
    from flts.promotion.pointer import PromotionStore

log = logging.getLogger(__name__)

#: Beside ``model-promotion/``, not in it: every name inside is a possible identifier.
INDEX_KEY = "model-promotion-index.json"
PARTS_PREFIX = "model-promotion-index"
#: Parts of the index; a power of two, so that a replica of shard k of n (n dividing it)
#: owns whole parts.
PARTS = 256
_M = TypeVar("_M", bound=BaseModel)
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
    """The part's sequence number when this entry last changed."""
    champion: ChampionSummary | None = None
    """The pointer's champion in brief; ``None`` for a damaged pointer (readers then read
    the pointer)."""


class IndexPart(BaseModel):
    """The entries of the identifiers of one part."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    sequence: int = 0
    entries: dict[str, IndexEntry] = Field(default_factory=dict)


class IndexTop(BaseModel):
    """Part name -> sha256 of that part's bytes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[2] = 2
    sequence: int = 0
    parts: dict[str, str] = Field(default_factory=dict)


class DamagedIndexError(ValueError):
    """An index object exists but is not one: readers fall back to a listing."""


@dataclass(frozen=True)
class IndexRead:
    """One version of the index: the top's store version tag, identifier -> pointer tag,
    the top's sequence number, and the parts the top names that the store lacks, each with
    the top's hash of it (their identifiers have no entry here: read their pointers)."""

    tag: str
    entries: dict[str, str]
    sequence: int
    missing: dict[str, str] = field(default_factory=dict)


def pointer_tag(data: bytes) -> str:
    """The change marker of a pointer's bytes (shared by the index and the pointer reads)."""
    return hashlib.sha256(data).hexdigest()


def part_of(identifier: str) -> str:
    """The index part that holds ``identifier``'s entry (two hex digits)."""
    return f"{shard_of(identifier, PARTS):02x}"


def part_key(part: str) -> str:
    return f"{PARTS_PREFIX}/{part}.json"


def _parse(model: type[_M], key: str, data: bytes) -> _M:
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise DamagedIndexError(
            f"{key}: {exc.error_count()} problem(s): {exc.errors()[0]['msg']}"
        ) from exc


def _readable(model: type[_M], key: str, data: bytes | None) -> _M | None:
    """``data`` as a ``model`` for a writer: ``None`` when absent or damaged (a damaged
    object is logged; the writer rebuilds it)."""
    if data is None:
        return None
    try:
        return _parse(model, key, data)
    except DamagedIndexError as exc:
        log.warning("rebuilding a damaged promotion index object: %s", exc)
        return None


# ----------------------------------------------------------------------------- reading


class IndexReader:
    """The index as one reader last saw it: the top's version and the parts it holds, so a
    read after a change costs the top and the parts that changed, nothing else."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._tag: str | None = None
        self._sequence = 0
        self._digests: dict[str, str] = {}  # part -> sha256 of the bytes held
        self._parts: dict[str, dict[str, IndexEntry]] = {}
        self._absent: dict[str, str] = {}  # part -> the top's hash of it the store lacked

    @property
    def missing(self) -> dict[str, str]:
        """Parts the top names that the store lacked (this reader holds no copy of them, or
        only a stale one, dropped), each with the top's hash of it."""
        return dict(self._absent)

    def read(self, since: str | None) -> IndexRead | None:
        """The index if the top's version is not ``since`` (``None``: unchanged, one small
        request); ``KeyError`` when there is none, :class:`DamagedIndexError` when an object
        of it is not readable.

        A part the top names but the store lacks (deleted, or lost) is no damage. It is
        only asked for when the top's hash of it differs from the copy held, so the copy
        held, if any, is older than the top says (a commit happened in the part since): it
        is dropped and the part reported in :attr:`IndexRead.missing` with the top's hash,
        and the caller reads that part's pointers. Each hash the top names of a lost part is
        asked for once, so a lost part costs one request per change of its hash, not one
        per poll; the part's next writer rebuilds it."""
        found = self.store.get_if_changed(INDEX_KEY, since)
        if found is None:
            return None
        top = _parse(IndexTop, INDEX_KEY, found.data)
        for part, digest in top.parts.items():
            if digest in (self._digests.get(part), self._absent.get(part)):
                continue
            try:
                data = self.store.get(part_key(part))
            except KeyError:
                log.warning(
                    "promotion index part %s is missing (%s): its pointers are read instead "
                    "until its next writer rebuilds it",
                    part,
                    "the copy held is stale" if part in self._parts else "none held",
                )
                self._absent[part] = digest
                self._parts.pop(part, None)
                self._digests.pop(part, None)
                continue
            self._parts[part] = _parse(IndexPart, part_key(part), data).entries
            # The bytes held, which may be newer than the top says: the next top that
            # names them costs no read.
            self._digests[part] = hashlib.sha256(data).hexdigest()
            self._absent.pop(part, None)
        for gone in (self._parts.keys() | self._absent.keys()) - top.parts.keys():
            self._parts.pop(gone, None)
            self._digests.pop(gone, None)
            self._absent.pop(gone, None)
        self._tag, self._sequence = found.tag, top.sequence
        return IndexRead(found.tag, self._tags(), top.sequence, self.missing)

    def refresh(self) -> dict[str, IndexEntry]:
        """Every entry, as of now (reads what changed since the last read; the parts
        :attr:`missing` have none)."""
        self.read(self._tag)
        return {name: entry for part in self._parts.values() for name, entry in part.items()}

    def _tags(self) -> dict[str, str]:
        return {name: entry.tag for part in self._parts.values() for name, entry in part.items()}


def read_index(store: ObjectStore, since: str | None = None) -> IndexRead | None:
    """The whole index if the top's version is not ``since``, read afresh (see
    :meth:`IndexReader.read`; a reader that polls keeps an :class:`IndexReader`)."""
    return IndexReader(store).read(since)


# ----------------------------------------------------------------------------- writing


def note_pointer(pointers: PromotionStore, identifier: str) -> bool:
    """Record ``identifier``'s pointer as it is now in its part, then the part in the top,
    each by compare-and-swap; ``False`` if every attempt lost its race (the repair paths then
    catch up). A missing or damaged top is rebuilt with every part from a listing of every
    pointer first; a part the top names but the store lacks, or a damaged one, is rebuilt
    from a listing of that part's pointers."""
    store = pointers.store
    part = part_of(identifier)
    named = part in _current_top(pointers).parts
    key = part_key(part)
    if _cas(store, key, lambda data: _part_with(pointers, data, identifier, named)) is None:
        return _gave_up(identifier)
    if _cas(store, INDEX_KEY, lambda data: _top_with(pointers, data, part)) is None:
        return _gave_up(identifier)
    return True


def _current_top(pointers: PromotionStore) -> IndexTop:
    """The top as stored, or one rebuilt (with every part) when it is missing or damaged."""
    store = pointers.store
    top = IndexTop()
    for _ in range(_ATTEMPTS):
        try:
            version = store.get_versioned(INDEX_KEY)
        except KeyError:
            tag = None
        else:
            tag = version.tag
            stored = _readable(IndexTop, INDEX_KEY, version.data)
            if stored is not None:
                return stored
        top = _rebuild_all(pointers)
        if store.put_if_match(INDEX_KEY, top.model_dump_json().encode(), tag):
            return top
    return top  # others keep rebuilding it: the part update below still goes ahead


def _gave_up(identifier: str) -> bool:
    log.warning(
        "the promotion index did not take %r after %d attempts; replicas catch up at their "
        "next full listing",
        identifier,
        _ATTEMPTS,
    )
    return False


@dataclass(frozen=True)
class _Stored:
    """What a compare-and-swap left under its key: the bytes, ``None`` when absent."""

    data: bytes | None


def _cas(
    store: ObjectStore, key: str, change: Callable[[bytes | None], bytes | None]
) -> _Stored | None:
    """Replace ``key``'s bytes with ``change(bytes or None when absent)`` by compare-and-swap,
    retried on a lost race; ``change`` returns ``None`` when there is nothing to write. The
    bytes then stored (written, or found right as they were), or ``None`` if every attempt
    lost its race."""
    for attempt in range(_ATTEMPTS):
        try:
            version = store.get_versioned(key)
            tag, data = version.tag, version.data
        except KeyError:
            tag, data = None, None
        updated = change(data)
        if updated is None:
            return _Stored(data)
        if store.put_if_match(key, updated, tag):
            return _Stored(updated)
        time.sleep(random.uniform(0.0, 0.01 * (attempt + 1)))  # spread the racing writers
    return None


def _same(old: IndexEntry | None, new: IndexEntry | None) -> bool:
    """Whether two entries say the same of a pointer (their sequence numbers aside)."""
    if old is None or new is None:
        return old is new
    return old.model_copy(update={"sequence": new.sequence}) == new


def _part_with(
    pointers: PromotionStore, data: bytes | None, identifier: str, named: bool
) -> bytes | None:
    """The part holding ``identifier`` with its entry set from its pointer as stored now
    (``None``: already so). ``named``: the top names this part, so if it is absent it was
    lost (rebuilt from a listing) rather than never written (started empty)."""
    part = part_of(identifier)
    document = _readable(IndexPart, part_key(part), data)
    if data is None and not named:
        document = IndexPart()
    rebuilt = document is None
    if document is None:
        document = _rebuild_parts(pointers, part).get(part, IndexPart(sequence=1))
    entries = dict(document.entries)
    entry = _entry(pointers, identifier, document.sequence + 1)
    unchanged = _same(entries.get(identifier), entry)
    if unchanged and not rebuilt:
        return None
    if entry is None:
        entries.pop(identifier, None)
    elif not unchanged:
        entries[identifier] = entry
    return IndexPart(sequence=document.sequence + 1, entries=entries).model_dump_json().encode()


def _top_with(pointers: PromotionStore, data: bytes | None, part: str) -> bytes | None:
    """The top with ``part``'s hash set from the part's bytes, read now (after the top, so a
    newer part written in between is never hidden by this write); ``None``: already so. A
    missing or unreadable top is rebuilt with every part first."""
    store = pointers.store
    top = _readable(IndexTop, INDEX_KEY, data)
    if top is None:  # lost since this writer read it
        return _rebuild_all(pointers).model_dump_json().encode()
    try:
        digest = hashlib.sha256(store.get(part_key(part))).hexdigest()
    except KeyError:
        return None  # the part's own writer names it once written
    if top.parts.get(part) == digest:
        return None
    parts = {**top.parts, part: digest}
    return IndexTop(sequence=top.sequence + 1, parts=parts).model_dump_json().encode()


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


def _rebuild_parts(pointers: PromotionStore, only: str | None = None) -> dict[str, IndexPart]:
    """Every part (or ``only`` that one), from a listing of the pointers (the rare repair;
    a read per pointer of the parts rebuilt)."""
    entries: dict[str, dict[str, IndexEntry]] = defaultdict(dict)
    for identifier in pointers.identifiers():
        if only is not None and part_of(identifier) != only:
            continue
        entry = _entry(pointers, identifier, 1)
        if entry is not None:
            entries[part_of(identifier)][identifier] = entry
    return {part: IndexPart(sequence=1, entries=found) for part, found in entries.items()}


def _rebuild_all(pointers: PromotionStore) -> IndexTop:
    """Write every part afresh from a listing and return the top that names them as stored.

    Each part is written by compare-and-swap against the part as stored at the write
    (:func:`_merged`), never blindly: a commit between this rebuild's read of a pointer and
    its write of the part has put a newer entry there, which a plain write would replace
    with the older one read here, hiding that promotion until the station's next commit."""
    store = pointers.store
    digests = {}
    for part, rebuilt in _rebuild_parts(pointers).items():
        key = part_key(part)
        stored = _cas(store, key, functools.partial(_merged, pointers, part, rebuilt))
        if stored is None:  # its writers keep changing it: name it as it is now
            try:
                stored = _Stored(store.get(key))
            except KeyError:
                stored = _Stored(None)
        if stored.data is not None:
            digests[part] = hashlib.sha256(stored.data).hexdigest()
    return IndexTop(sequence=1, parts=digests)


def _merged(
    pointers: PromotionStore, part: str, rebuilt: IndexPart, data: bytes | None
) -> bytes | None:
    """The part to store in place of ``data`` (the part as stored now): ``rebuilt`` where
    there is no readable part; otherwise the stored part, with each entry on which it and
    ``rebuilt`` disagree read again from its pointer, since either may be the newer (the
    rebuild read the pointers a while ago, a commit may have written the part since).
    ``None``: the stored part is right as it is."""
    document = _readable(IndexPart, part_key(part), data)
    if document is None:
        return rebuilt.model_dump_json().encode()
    sequence = document.sequence + 1
    entries = dict(document.entries)
    changed = False
    for identifier in sorted(document.entries.keys() | rebuilt.entries.keys()):
        old = document.entries.get(identifier)
        if _same(old, rebuilt.entries.get(identifier)):
            continue
        entry = _entry(pointers, identifier, sequence)
        if _same(old, entry):
            continue
        changed = True
        if entry is None:
            del entries[identifier]
        else:
            entries[identifier] = entry
    if not changed:
        return None
    return IndexPart(sequence=sequence, entries=entries).model_dump_json().encode()
