"""The promotion pointer and its append-only history (docs/architecture.md, rules 6 and 13).

Layout under ``model-promotion/<identifier>/``::

    current.json                    the champion: plain JSON, replaced by compare-and-swap
    <config_hash>/current.json      the champion among models trained on that config
    history/<time>-<run_id>.json    one new object per promotion or rollback, created once

Beside the tree, ``model-promotion-index.json`` (:mod:`flts.promotion.index`) records every
pointer's change marker, updated after each pointer write, so replicas learn of promotions
from one small conditional read.

Readers never see a half-written pointer or entry: both are written whole
(:meth:`~flts.storage.ObjectStore.put_if_match`, :meth:`~flts.storage.ObjectStore.put_if_absent`).
A pointer naming a run that no longer exists in the tracking store falls back to the newest
*valid* entry of the history, never to "the newest run".

One writer per pointer: :meth:`PromotionStore.record` replaces ``current.json`` only if it
still names the champion the writer read (the promotion's ``previous_run_id``) and is still
the very version read (ETag ``If-Match`` on S3, a lock and a re-read on files); otherwise it
raises :class:`~flts.exceptions.ConflictError` and writes nothing. A history entry's key
follows from the promotion (time and run), so two writers of one promotion create one entry
and the second one learns it was not first.

A damaged history entry (truncated, not JSON, not a promotion) is skipped by every reader and
reported: a warning naming the key, and the ``on_damaged`` hook (the services count it as
``flts_promotion_history_damaged_total``), so one bad object never breaks rollback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from flts.events import Identifier
from flts.exceptions import ConfigurationError, ConflictError
from flts.promotion.index import note_pointer, pointer_tag
from flts.storage import ObjectStore

log = logging.getLogger(__name__)

PROMOTION_ROOT = "model-promotion"
_STAMP = "%Y%m%dT%H%M%S%fZ"

DamageListener = Callable[[str, str, str], None]
"""Called for every damaged object a reader skipped: ``(identifier, key, reason)``."""


class Promotion(BaseModel):
    """One champion decision, as stored in the pointer and the history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str = Field(min_length=1)
    model_type: str
    config_hash: str
    identifier: Identifier = "global"
    scores: dict[str, float] = Field(default_factory=dict)
    promoted_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    previous_run_id: str | None = None
    reason: str = ""
    action: Literal["promote", "rollback", "manual"] = "promote"
    #: sha256 of the run's artifact digest manifest (:mod:`flts.models.digests`); ``None``
    #: for runs logged before digests existed (their files are checked against nothing).
    artifact_digest: str | None = None
    #: Who made the decision: an API key's name (admin API), ``cli:<user>``, or None for
    #: the evaluator.
    actor: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What :meth:`PromotionStore.commit` did: the promotion as stored, and whether this
    call wrote its history entry (``False``: another writer or an earlier attempt did)."""

    promotion: Promotion
    created: bool


class PromotionStore:
    """Reads and writes pointers; ``run_exists`` (from tracking) makes reads fall back past
    runs that were deleted; ``on_damaged`` hears of every damaged object a read skipped."""

    def __init__(
        self,
        store: ObjectStore,
        run_exists: Callable[[str], bool] | None = None,
        on_damaged: DamageListener | None = None,
    ) -> None:
        self.store = store
        self.run_exists = run_exists
        self.on_damaged = on_damaged

    @staticmethod
    def pointer_key(identifier: str, config_hash: str | None = None) -> str:
        if config_hash is None:
            return f"{PROMOTION_ROOT}/{identifier}/current.json"
        return f"{PROMOTION_ROOT}/{identifier}/{config_hash}/current.json"

    @staticmethod
    def history_key(promotion: Promotion) -> str:
        stamp = promotion.promoted_at.astimezone(UTC).strftime(_STAMP)
        return f"{PROMOTION_ROOT}/{promotion.identifier}/history/{stamp}-{promotion.run_id}.json"

    def parse_record(self, identifier: str, key: str, data: bytes) -> Promotion | None:
        """The promotion stored as ``data`` under ``key``; None, logged and counted, when it
        is damaged (docs/architecture.md, rule 13)."""
        try:
            return Promotion.model_validate_json(data)
        except ValidationError as exc:
            reason = f"{exc.error_count()} problem(s): {exc.errors()[0]['msg']}"
            log.warning("skipping damaged promotion record %s (%s)", key, reason)
            if self.on_damaged is not None:
                try:
                    self.on_damaged(identifier, key, reason)
                except Exception:  # reporting must never break a read
                    log.exception("damage listener failed")
            return None

    def _read(self, key: str, identifier: str) -> Promotion | None:
        try:
            return self.parse_record(identifier, key, self.store.get(key))
        except KeyError:
            return None

    def _valid(self, promotion: Promotion | None) -> bool:
        return promotion is not None and (
            self.run_exists is None or self.run_exists(promotion.run_id)
        )

    def _champion(
        self, identifier: str, pointer: Promotion | None, *, present: bool
    ) -> Promotion | None:
        """``pointer`` if its run exists, else the newest valid history entry (also when a
        ``present`` pointer could not be read: damaged)."""
        if (pointer is None and not present) or self._valid(pointer):
            return pointer
        return next((p for p in reversed(self.history(identifier)) if self._valid(p)), None)

    def current(self, identifier: str = "global") -> Promotion | None:
        """The champion for ``identifier``, or the newest valid history entry if the pointer
        names a run that no longer exists (or is damaged); ``None`` before the first
        promotion."""
        key = self.pointer_key(identifier)
        try:
            data = self.store.get(key)
        except KeyError:
            return None
        return self._champion(identifier, self.parse_record(identifier, key, data), present=True)

    def current_for_config(self, identifier: str, config_hash: str) -> Promotion | None:
        pointer = self._read(self.pointer_key(identifier, config_hash), identifier)
        return pointer if self._valid(pointer) else None

    def etag(self, identifier: str = "global") -> str | None:
        """A cheap change marker of the pointer (hash of its bytes) for pollers; the
        promotion index records the same marker."""
        try:
            return pointer_tag(self.store.get(self.pointer_key(identifier)))
        except KeyError:
            return None

    def history(self, identifier: str = "global") -> list[Promotion]:
        """Every readable promotion and rollback for ``identifier``, oldest first (damaged
        entries are skipped and reported, see the module doc)."""
        entries: list[Promotion] = []
        for key in self.store.list(f"{PROMOTION_ROOT}/{identifier}/history"):
            entry = self._read(key, identifier)
            if entry is not None:
                entries.append(entry)
        return entries

    def loadable_history(self, identifier: str = "global") -> list[Promotion]:
        """Valid history entries newest first, one per run: the fallbacks of a replica that
        cannot load the champion."""
        seen: set[str] = set()
        ordered: list[Promotion] = []
        for entry in reversed(self.history(identifier)):
            if entry.run_id not in seen and self._valid(entry):
                seen.add(entry.run_id)
                ordered.append(entry)
        return ordered

    def identifiers(self) -> list[str]:
        """Identifiers that have a pointer."""
        keys = self.store.list(PROMOTION_ROOT)
        return sorted({k.split("/")[1] for k in keys if k.endswith("/current.json")})

    def record(self, promotion: Promotion) -> Promotion:
        """Make ``promotion`` the champion (see :meth:`commit`); return it as stored."""
        return self.commit(promotion).promotion

    def commit(self, promotion: Promotion, *, exact_previous: bool = False) -> Recorded:
        """Make ``promotion`` the champion: history entry first (so a crash never leaves a
        pointer without its history), then the main pointer by compare-and-swap, then the
        per-config one. Safe to repeat: a promotion already recorded is finished, not
        recorded twice.

        ``previous_run_id`` is the champion the writer based its decision on; with
        ``exact_previous`` that holds for ``None`` too ("there was no champion"), without it
        ``None`` means "whatever is champion now". If the champion is another run by now, or
        the pointer changes between our read and our write, nothing is written and
        :class:`~flts.exceptions.ConflictError` says to re-read and decide again.
        """
        identifier = promotion.identifier
        key = self.pointer_key(identifier)
        entry_key = self.history_key(promotion)
        created = False
        # A pass repeats only when another writer of this very promotion got in between
        # (it created the entry, or wrote the pointer): the next pass sees its work.
        for _ in range(3):
            tag, pointer = self._read_pointer(identifier)
            if pointer is not None and self.history_key(pointer) == entry_key:
                self._write_config_pointer(pointer)  # the main pointer is written already
                note_pointer(self, identifier)  # a repeat repairs an index update lost
                return Recorded(pointer, created)
            champion = self._champion(identifier, pointer, present=tag is not None)
            champion_run = None if champion is None else champion.run_id
            existing = self._read(entry_key, identifier)
            if existing is not None:
                if existing.previous_run_id != champion_run:
                    if created:  # ours, and the pointer moved on before we could write it
                        break
                    # Recorded once, and the champion has moved on since: nothing to do.
                    return Recorded(existing, created=False)
                promotion = existing  # a crash (or another writer) is between entry and pointer
            else:
                if promotion.previous_run_id is None and not exact_previous:
                    promotion = promotion.model_copy(update={"previous_run_id": champion_run})
                elif promotion.previous_run_id != champion_run:
                    raise ConflictError(
                        f"{identifier}: the champion is {champion_run}, not "
                        f"{promotion.previous_run_id} as when this promotion was decided"
                    )
                if not self.store.put_if_absent(entry_key, self._encode(promotion)):
                    continue
                created = True
            if self.store.put_if_match(key, self._encode(promotion), tag):
                self._write_config_pointer(promotion)
                note_pointer(self, identifier)  # the hint replicas poll (flts.promotion.index)
                return Recorded(promotion, created)
        if created:  # never champion: do not leave it for rollback to find
            self.store.delete(entry_key)
        raise ConflictError(f"{identifier}: the promotion pointer changed while writing")

    def _read_pointer(self, identifier: str) -> tuple[str | None, Promotion | None]:
        """The main pointer's version tag and promotion (``None`` when damaged or absent;
        the tag tells the two apart)."""
        key = self.pointer_key(identifier)
        try:
            version = self.store.get_versioned(key)
        except KeyError:
            return None, None
        return version.tag, self.parse_record(identifier, key, version.data)

    @staticmethod
    def _encode(promotion: Promotion) -> bytes:
        return promotion.model_dump_json(indent=2).encode()

    def _write_config_pointer(self, promotion: Promotion) -> None:
        key = self.pointer_key(promotion.identifier, promotion.config_hash)
        self.store.put_atomic(key, self._encode(promotion))

    def rollback(
        self, identifier: str = "global", reason: str = "manual rollback", actor: str | None = None
    ) -> Promotion:
        """Re-promote the champion before the current one (the newest valid history entry
        whose run differs from the current champion's)."""
        current = self.current(identifier)
        if current is None:
            raise ConfigurationError(f"no champion for {identifier!r}: nothing to roll back")
        for entry in self.loadable_history(identifier):
            if entry.run_id != current.run_id:
                return self.record(
                    entry.model_copy(
                        update={
                            "promoted_at": datetime.now(UTC),
                            "previous_run_id": current.run_id,
                            "reason": reason,
                            "action": "rollback",
                            "actor": actor,
                        }
                    )
                )
        raise ConfigurationError(f"no earlier valid champion for {identifier!r}")
