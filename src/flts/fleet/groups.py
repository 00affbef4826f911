"""Groups: the stations of one bulk upload, which the global model type trains together.

A bulk upload (one CSV with an identifier column, or several files at once) becomes one
dataset per station, each its own claim check and config hash, plus one manifest naming every
station that passed validation::

    groups/<group>.json  {"group": "...", "created_at": "...",
                          "members": {"<identifier>": "<dataset_id>", ...}}

The manifest is written before any station's ``dataset-uploaded`` event is announced, so a
trainer that receives a member's ``training-data`` (which carries the group,
:attr:`flts.events.TrainingData.group`) can always read who else belongs to it. It is written
once and never changed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from flts.events import Identifier
from flts.storage import ObjectStore

GROUPS_PREFIX = "groups/"


class GroupManifest(BaseModel):
    """The stations of one bulk upload and the dataset each became."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: Identifier
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    members: dict[Identifier, str] = Field(min_length=1)
    """Identifier -> the dataset id of its upload."""


def group_key(group: str) -> str:
    """The manifest's object key."""
    return f"{GROUPS_PREFIX}{group}.json"


def write_group(store: ObjectStore, manifest: GroupManifest) -> None:
    """Store ``manifest`` (whole, at once: a reader never sees half of it)."""
    store.put_atomic(group_key(manifest.group), manifest.model_dump_json().encode())


def read_group(store: ObjectStore, group: str) -> GroupManifest | None:
    """The manifest of ``group``, or ``None`` when there is none."""
    key = group_key(group)
    if not store.exists(key):
        return None
    return GroupManifest.model_validate_json(store.get(key))
