"""The object store: a thin wrapper over ``fsspec.url_to_fs``, chosen by URL.

``file://`` (embedded default), ``memory://`` (tests) and ``s3://bucket[/prefix]`` (s3fs) all
work through the same calls. Keys are relative, ``/``-separated and validated, so a key built
from user input can never escape the store's root.

S3 configuration (works with AWS, MinIO and SeaweedFS), highest precedence first:

1. options passed to :class:`ObjectStore` (``StorageSettings.options()`` passes
   ``FLTS_S3_ENDPOINT_URL``, ``FLTS_S3_ACCESS_KEY_ID``, ``FLTS_S3_SECRET_ACCESS_KEY`` and
   ``FLTS_S3_REGION`` when set);
2. the standard AWS variables, resolved by botocore itself: ``AWS_ENDPOINT_URL_S3`` /
   ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (and
   ``AWS_SESSION_TOKEN``), ``AWS_DEFAULT_REGION`` / ``AWS_REGION``;
3. botocore's other sources: ``~/.aws`` profiles, container and instance roles.

S3 directory listings are not cached (``use_listings_cache=False`` unless given): another
process may write between two of our reads (the evaluator polls for markers, replicas for
the pointer), and a stale listing would hide its objects.

Pointer files (the promotion pointer) must never be seen half-written: ``put_atomic`` writes a
temporary object and renames it on local filesystems, and on object stores relies on a single
PUT of the whole object (S3 has no partial objects; readers see the old or the new one). s3fs
switches to a multipart upload above its block size, which is still all-or-nothing but not one
request, so ``put_atomic`` refuses objects that large: a pointer is a few hundred bytes.
A reader of a missing object gets ``KeyError`` and decides what "absent" means.

Every call on the filesystem goes through :func:`flts.transient.translated`: an endpoint that
refuses, resets, times out or answers 5xx raises :class:`~flts.exceptions.InfrastructureError`
(waited out by the consume loop, 503 at an HTTP edge), never a library-specific error that a
consumer would mistake for the message's fault (docs/architecture.md, rule 11).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from flts.exceptions import ConfigurationError, DataValidationError
from flts.transient import translated

#: Largest object ``put_atomic`` writes on an object store: s3fs's multipart threshold (its
#: default block size), below which ``pipe_file`` is one ``PutObject`` request.
SINGLE_PUT_LIMIT = 50 * 2**20
_S3_SCHEMES = ("s3://", "s3a://")

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")


def check_key(key: str) -> str:
    """Return ``key`` if every ``/``-separated part is a safe name, else raise.

    Rejects empty parts, ``.``/``..``, leading dots and anything outside ``[A-Za-z0-9_.=-]``.
    """
    parts = key.split("/")
    bad = [p for p in parts if not _KEY_PART.match(p) or p in (".", "..")]
    if not key or bad:
        raise DataValidationError(f"invalid object key {key!r}: unsafe parts {bad}")
    return key


class ObjectStore:
    """Bytes and JSON by key under one root URL."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        if url.lower().startswith(_S3_SCHEMES):
            storage_options.setdefault("use_listings_cache", False)
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise ConfigurationError(f"cannot open object store {url!r}: {exc}") from exc
        self.url = url
        self.root = root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with translated("object store", f"write {key}"):
            if self.local:  # object stores have no directories to create
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(path, data)

    def put_atomic(self, key: str, data: bytes) -> None:
        """Write so readers see the old object or the new one, never a partial one."""
        if not self.local:
            if len(data) > SINGLE_PUT_LIMIT:
                raise DataValidationError(
                    f"{key!r}: {len(data)} bytes is too large for one atomic PUT "
                    f"(limit {SINGLE_PUT_LIMIT})"
                )
            with translated("object store", f"write {key}"):
                self.fs.pipe_file(self._path(key), data)  # one PutObject: atomic on S3
            return
        path = self._path(key)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with translated("object store", f"write {key}"):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(temporary, data)
            self.fs.mv(temporary, path)  # rename(2): atomic within one filesystem

    def get(self, key: str) -> bytes:
        try:
            with translated("object store", f"read {key}"):
                data: bytes = self.fs.cat_file(self._path(key))
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        return data

    def exists(self, key: str) -> bool:
        path = self._path(key)
        with translated("object store", f"look up {key}"):
            return bool(self.fs.exists(path))

    def put_json(self, key: str, document: Any, *, atomic: bool = False) -> None:
        data = json.dumps(document, indent=2, sort_keys=True).encode()
        (self.put_atomic if atomic else self.put)(key, data)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix/`` (recursively), relative to the store root, sorted.

        Only keys strictly below the prefix count: fsspec's ``find`` also returns the prefix
        itself when it names an object, and SeaweedFS answers a HEAD on an emptied
        "directory" as if it were an empty object, which would list a key nobody wrote.
        """
        base = self._path(prefix.rstrip("/"))
        try:
            with translated("object store", f"list {prefix}"):
                found = self.fs.find(base)  # [] for a missing prefix on every backend we use
        except FileNotFoundError:  # e.g. a bucket that does not exist (yet)
            return iter(())
        below = f"{base}/"
        start = len(self.root) + 1
        return iter(sorted(str(p)[start:] for p in found if str(p).startswith(below)))

    def delete(self, key: str) -> None:
        path = self._path(key)
        with translated("object store", f"delete {key}"):
            if self.fs.exists(path):
                self.fs.rm(path)
