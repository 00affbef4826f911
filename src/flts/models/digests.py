"""Per-file sha256 digests of a saved model directory (docs/architecture.md, rule 12).

At training time :func:`write_digests` puts ``digests.json`` beside the model files (every
file's sha256, by path relative to the directory); the sha256 of that manifest's own bytes,
the *artifact digest*, is kept as the MLflow run tag ``artifact_digest`` and in the promotion
pointer. :func:`verify` checks a directory against it before anything is loaded from it, so a
cache never trusts a directory just because it exists: a changed, missing or truncated file,
or a manifest that is not the one recorded, is a :class:`~flts.exceptions.ModelError` naming
what differs, and the caller fetches the model again.

Models saved before digests existed have no manifest; they pass when no artifact digest was
recorded for them either (nothing to compare with), and fail when one was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path

from flts.exceptions import ModelError

DIGESTS = "digests.json"
_CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_digests(directory: Path) -> str:
    """Write ``digests.json`` for every file below ``directory``; return the artifact digest."""
    files = {
        path.relative_to(directory).as_posix(): file_digest(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != DIGESTS
    }
    data = json.dumps({"algorithm": "sha256", "files": files}, indent=2, sort_keys=True).encode()
    (directory / DIGESTS).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def verify(directory: Path, expected: str | None) -> None:
    """Raise :class:`ModelError` unless every file listed in ``directory``'s manifest has its
    digest and the manifest itself has the artifact digest ``expected`` (``None``: only the
    files are checked, or nothing for a model saved without a manifest)."""
    manifest = directory / DIGESTS
    if not manifest.is_file():
        if expected is None:
            return
        raise ModelError(f"{directory.name}: no {DIGESTS}, expected artifact digest {expected}")
    data = manifest.read_bytes()
    found = hashlib.sha256(data).hexdigest()
    if expected is not None and found != expected:
        raise ModelError(f"{directory.name}: {DIGESTS} is {found[:12]}, expected {expected[:12]}")
    try:
        files = dict(json.loads(data)["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{directory.name}: unreadable {DIGESTS}: {exc}") from exc
    bad: list[str] = []
    for name, digest in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            bad.append(f"{name} missing")
        elif file_digest(path) != digest:
            bad.append(f"{name} differs")
    if bad:
        raise ModelError(f"{directory.name}: artifact files do not match their digests: {bad}")


def evict(directory: Path) -> None:
    """Remove a cached model directory that failed :func:`verify`: renamed aside first (one
    atomic step, so no reader opens a half-deleted directory), then deleted."""
    aside = directory.with_name(f".evicted-{directory.name}-{uuid.uuid4().hex}")
    try:
        directory.rename(aside)
    except FileNotFoundError:  # another process evicted it first
        return
    shutil.rmtree(aside, ignore_errors=True)
