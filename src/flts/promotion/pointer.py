"""The promotion pointer and its append-only history (docs/architecture.md, rule 6).

Layout under ``model-promotion/<identifier>/``::

    current.json                    the champion: plain JSON, written atomically
    <config_hash>/current.json      the champion among models trained on that config
    history/<time>-<run_id>.json    one new object per promotion or rollback, never rewritten

Readers never see a half-written pointer (atomic writes), and a pointer naming a run that no
longer exists in the tracking store falls back to the newest *valid* entry of the history,
never to "the newest run".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from flts.events import Identifier
from flts.exceptions import ConfigurationError
from flts.storage import ObjectStore

PROMOTION_ROOT = "model-promotion"
_STAMP = "%Y%m%dT%H%M%S%fZ"


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
    #: Who made the decision: an API key's name (admin API), ``cli:<user>``, or None for
    #: the evaluator.
    actor: str | None = None


class PromotionStore:
    """Reads and writes pointers; ``run_exists`` (from tracking) makes reads fall back past
    runs that were deleted."""

    def __init__(self, store: ObjectStore, run_exists: Callable[[str], bool] | None = None) -> None:
        self.store = store
        self.run_exists = run_exists

    @staticmethod
    def pointer_key(identifier: str, config_hash: str | None = None) -> str:
        if config_hash is None:
            return f"{PROMOTION_ROOT}/{identifier}/current.json"
        return f"{PROMOTION_ROOT}/{identifier}/{config_hash}/current.json"

    def _read(self, key: str) -> Promotion | None:
        try:
            return Promotion.model_validate_json(self.store.get(key))
        except KeyError:
            return None

    def _valid(self, promotion: Promotion | None) -> bool:
        return promotion is not None and (
            self.run_exists is None or self.run_exists(promotion.run_id)
        )

    def current(self, identifier: str = "global") -> Promotion | None:
        """The champion for ``identifier``, or the newest valid history entry if the pointer
        names a run that no longer exists; ``None`` before the first promotion."""
        pointer = self._read(self.pointer_key(identifier))
        if pointer is None or self._valid(pointer):
            return pointer
        return next((p for p in reversed(self.history(identifier)) if self._valid(p)), None)

    def current_for_config(self, identifier: str, config_hash: str) -> Promotion | None:
        pointer = self._read(self.pointer_key(identifier, config_hash))
        return pointer if self._valid(pointer) else None

    def etag(self, identifier: str = "global") -> str | None:
        """A cheap change marker of the pointer (hash of its bytes) for pollers."""
        try:
            return hashlib.sha256(self.store.get(self.pointer_key(identifier))).hexdigest()
        except KeyError:
            return None

    def history(self, identifier: str = "global") -> list[Promotion]:
        """Every promotion and rollback for ``identifier``, oldest first."""
        prefix = f"{PROMOTION_ROOT}/{identifier}/history"
        return [Promotion.model_validate_json(self.store.get(k)) for k in self.store.list(prefix)]

    def identifiers(self) -> list[str]:
        """Identifiers that have a pointer."""
        keys = self.store.list(PROMOTION_ROOT)
        return sorted({k.split("/")[1] for k in keys if k.endswith("/current.json")})

    def record(self, promotion: Promotion) -> Promotion:
        """Make ``promotion`` the champion: history entry first (so a crash never leaves a
        pointer without its history), then the per-config pointer, then the main one."""
        current = self.current(promotion.identifier)
        if current is not None and promotion.previous_run_id is None:
            promotion = promotion.model_copy(update={"previous_run_id": current.run_id})
        stamp = promotion.promoted_at.astimezone(UTC).strftime(_STAMP)
        history_key = (
            f"{PROMOTION_ROOT}/{promotion.identifier}/history/{stamp}-{promotion.run_id}.json"
        )
        document = promotion.model_dump(mode="json")
        self.store.put_json(history_key, document)
        self.store.put_json(
            self.pointer_key(promotion.identifier, promotion.config_hash), document, atomic=True
        )
        self.store.put_json(self.pointer_key(promotion.identifier), document, atomic=True)
        return promotion

    def rollback(
        self, identifier: str = "global", reason: str = "manual rollback", actor: str | None = None
    ) -> Promotion:
        """Re-promote the champion before the current one (the newest valid history entry
        whose run differs from the current champion's)."""
        current = self.current(identifier)
        if current is None:
            raise ConfigurationError(f"no champion for {identifier!r}: nothing to roll back")
        for entry in reversed(self.history(identifier)):
            if entry.run_id != current.run_id and self._valid(entry):
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
