"""The object store: a thin wrapper over ``fsspec.url_to_fs``, chosen by URL.

``file://`` (embedded default), ``memory://`` (tests) and ``s3://bucket/prefix`` (s3fs, with
endpoint and credentials from the standard AWS environment variables) all work through the
same calls. Keys are relative, ``/``-separated and validated, so a key built from user input
can never escape the store's root.

Pointer files (the promotion pointer) must never be seen half-written: ``put_atomic`` writes a
temporary object and renames it on filesystems that can, and relies on a single whole-object
PUT on object stores (S3 has no partial objects).
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
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        except (ValueError, ImportError) as exc:
            raise ConfigurationError(f"cannot open object store {url!r}: {exc}") from exc
        self.url = url
        self.root = root.rstrip("/")
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def put_atomic(self, key: str, data: bytes) -> None:
        """Write so readers see the old object or the new one, never a partial one."""
        if not isinstance(self.fs, LocalFileSystem):
            self.put(key, data)  # a single PUT is atomic on object stores
            return
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(temporary, data)
        self.fs.mv(temporary, path)  # rename(2): atomic within one filesystem

    def get(self, key: str) -> bytes:
        try:
            data: bytes = self.fs.cat_file(self._path(key))
        except FileNotFoundError as exc:
            raise KeyError(key) from exc
        return data

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def put_json(self, key: str, document: Any, *, atomic: bool = False) -> None:
        data = json.dumps(document, indent=2, sort_keys=True).encode()
        (self.put_atomic if atomic else self.put)(key, data)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def list(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix`` (recursively), relative to the store root, sorted."""
        base = self._path(prefix.rstrip("/"))
        if not self.fs.exists(base):
            return iter(())
        found = self.fs.find(base)
        start = len(self.root) + 1
        return iter(
            sorted(str(p)[start:] if str(p).startswith(self.root) else str(p) for p in found)
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path)
