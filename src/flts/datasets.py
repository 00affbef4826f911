"""Where stored datasets live: ``datasets/<dataset_id>/train.csv``, ``test.csv`` (when there
is one) and ``meta.json``, written last so a listed dataset is always complete. Uploads
(:mod:`flts.services.gateway`) and retraining sets built from observations
(:mod:`flts.live.retrain`) share the layout, so the pipeline reads both alike."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flts.storage import ObjectStore

DATASETS_ROOT = "datasets"
#: The form of a dataset id (UTC time, random hex), also the OpenAPI pattern of the routes.
DATASET_ID_PATTERN = "^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{12}$"
_DATASET_ID = re.compile(DATASET_ID_PATTERN)


def new_dataset_id(now: datetime | None = None, token: str | None = None) -> str:
    """``<UTC yyyymmddThhmmssZ>-<12 hex>``: sorts by creation time, unguessable, key-safe
    (``token``, 12 hex digits, for an id that must come out the same when made again)."""
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{token or uuid.uuid4().hex[:12]}"


def is_dataset_id(value: str) -> bool:
    """True when ``value`` has the shape :func:`new_dataset_id` produces."""
    return bool(_DATASET_ID.fullmatch(value))


def meta_key(dataset_id: str) -> str:
    """The completion marker of a dataset (``dataset_id`` must already be validated): what
    listings read, written last (for uploads, once announced: :mod:`flts.services.outbox`)."""
    return f"{DATASETS_ROOT}/{dataset_id}/meta.json"


def dataset_keys(dataset_id: str) -> dict[str, str]:
    """Object keys of one dataset (``dataset_id`` must already be validated)."""
    prefix = f"{DATASETS_ROOT}/{dataset_id}"
    return {
        "train": f"{prefix}/train.csv",
        "test": f"{prefix}/test.csv",
        "meta": meta_key(dataset_id),
    }


def read_dataset_metas(store: ObjectStore, identifier: str | None = None) -> list[dict[str, Any]]:
    """Metadata of every complete dataset (optionally one identifier's), newest first; one
    removed while listing (``flts gc``) is left out."""
    documents: list[dict[str, Any]] = []
    for key in store.list(DATASETS_ROOT):
        if not key.endswith("/meta.json"):
            continue
        try:
            document = store.get_json(key)
        except KeyError:
            continue
        if identifier is None or document.get("identifier") == identifier:
            documents.append(document)
    documents.sort(key=lambda d: str(d.get("uploaded_at", "")), reverse=True)
    return documents
