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

Conditional writes (docs/architecture.md, rule 13), so that one writer wins a decision or a
pointer update and the others learn they lost:

* :meth:`ObjectStore.put_if_absent` creates an object only if no object has the key, and
  :meth:`ObjectStore.put_if_match` replaces one only if it is still the version the writer
  read (:meth:`ObjectStore.get_versioned` gives the bytes and their version tag). Both write
  the whole object at once and answer ``False`` when another writer got there first.
* S3: ``PutObject`` with ``If-None-Match: *`` and with ``If-Match: <ETag>`` (AWS, MinIO and
  SeaweedFS, which the contract suite runs on, answer ``412 Precondition Failed``); the tag
  is the ETag.
* Local files: a temporary file hard-linked into place (``link(2)`` fails if the name exists)
  for the exclusive create; for the compare-and-swap, an ``flock`` per key held across
  re-read, compare and rename (the lock files live under ``.locks/`` of the root, which no
  key can name); the tag is the sha256 of the bytes.
* Memory: one lock per process around compare and write (the memory filesystem is a
  per-process dict, so no other process shares it); the tag is the sha256 of the bytes.

Any other fsspec backend has no conditional write we trust, so these calls refuse it with a
:class:`~flts.exceptions.ConfigurationError` rather than pretending.

Every call on the filesystem goes through :func:`flts.transient.translated`: an endpoint that
refuses, resets, times out or answers 5xx raises :class:`~flts.exceptions.InfrastructureError`
(waited out by the consume loop, 503 at an HTTP edge), never a library-specific error that a
consumer would mistake for the message's fault (docs/architecture.md, rule 11).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.asyn import sync
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from flts.exceptions import ConfigurationError, DataValidationError
from flts.transient import translated

#: Largest object ``put_atomic`` writes on an object store: s3fs's multipart threshold (its
#: default block size), below which ``pipe_file`` is one ``PutObject`` request.
SINGLE_PUT_LIMIT = 50 * 2**20
#: Buffer of a streamed :meth:`ObjectStore.put` (and S3 part size: s3fs's minimum is 5 MiB).
STREAM_BLOCK = 8 * 2**20
_S3_SCHEMES = ("s3://", "s3a://")

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,127}$")
#: Directory (under a local root) of the per-key lock files; a key part cannot start with
#: a dot, so no key can name it.
_LOCKS = ".locks"
_TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{32}$")
#: Serialises conditional writes on the memory filesystem (one dict per process).
_MEMORY_LOCK = threading.Lock()
#: S3 error codes meaning "your condition did not hold": another writer won.
_S3_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the tag of that version, for :meth:`ObjectStore.put_if_match`."""

    data: bytes
    tag: str


def _content_tag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lost_race(exc: BaseException) -> bool:
    """Whether an S3 error says a conditional write's precondition failed (s3fs turns the
    ``412`` into ``FileExistsError`` or a bare ``OSError`` depending on the server)."""
    if isinstance(exc, FileExistsError):
        return True
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _S3_LOST_RACE or status in (409, 412)


def _not_modified(exc: BaseException) -> bool:
    """Whether an S3 error is the ``304 Not Modified`` of a conditional read (s3fs turns it
    into a bare ``OSError`` whose cause carries the response)."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 304 or code in ("304", "NotModified")


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

    def put(self, key: str, data: bytes | IO[bytes]) -> None:
        """Write ``data``: bytes, or a seekable binary file, copied from its start in blocks of
        :data:`STREAM_BLOCK` so a large upload is never held in memory whole."""
        path = self._path(key)
        with translated("object store", f"write {key}"):
            if self.local:  # object stores have no directories to create
                self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            if isinstance(data, bytes):
                self.fs.pipe_file(path, data)
                return
            data.seek(0)
            with self.fs.open(path, "wb", block_size=STREAM_BLOCK) as target:
                shutil.copyfileobj(data, target, STREAM_BLOCK)

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

    # ---------------------------------------------------------------- conditional writes

    @property
    def _kind(self) -> str:
        if self.local:
            return "file"
        if isinstance(self.fs, MemoryFileSystem):
            return "memory"
        if self.url.lower().startswith(_S3_SCHEMES):
            return "s3"
        raise ConfigurationError(
            f"object store {self.url!r} has no conditional writes FLTS can rely on "
            "(use file://, memory:// or s3://)"
        )

    def get_versioned(self, key: str) -> Versioned:
        """The object's bytes and their version tag (``KeyError`` when absent)."""
        found = self.get_if_changed(key, None)
        assert found is not None  # without a tag there is nothing to be unchanged from
        return found

    def get_if_changed(self, key: str, tag: str | None) -> Versioned | None:
        """The object's bytes and version tag, or ``None`` if its version is still ``tag``
        (``KeyError`` when absent). On S3 this is one ``GetObject`` with
        ``If-None-Match: <ETag>``: an unchanged object answers ``304 Not Modified`` with no
        body, so a poller of a growing object pays one small request per poll. Memory and
        files read and compare the content tag (no request to save there)."""
        if self._kind != "s3":
            data = self.get(key)
            content = _content_tag(data)
            return None if content == tag else Versioned(data, content)
        bucket, name, _ = self.fs.split_path(self._path(key))
        condition = {} if tag is None else {"IfNoneMatch": tag}

        async def read() -> Versioned | None:
            try:
                response = await self.fs._call_s3(
                    "get_object", Bucket=bucket, Key=name, **condition
                )
            except OSError as exc:
                if tag is not None and _not_modified(exc):
                    return None
                raise
            body = response["Body"]
            try:
                data = await body.read()
            finally:
                body.close()
            return Versioned(bytes(data), str(response["ETag"]))

        with translated("object store", f"read {key}"):
            try:
                return sync(self.fs.loop, read)  # type: ignore[no-any-return]
            except FileNotFoundError as exc:
                raise KeyError(key) from exc

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless an object has that key; ``True`` when this
        call created it. The object appears whole (as with :meth:`put_atomic`)."""
        return self.put_if_match(key, data, None)

    def put_if_match(self, key: str, data: bytes, tag: str | None) -> bool:
        """Replace ``key`` with ``data`` only if its current version has ``tag`` (from
        :meth:`get_versioned`; ``None``: only if it does not exist); ``True`` on success,
        ``False`` when another writer changed (or created) it first."""
        kind = self._kind
        if len(data) > SINGLE_PUT_LIMIT and kind == "s3":
            raise DataValidationError(
                f"{key!r}: {len(data)} bytes is too large for one conditional PUT "
                f"(limit {SINGLE_PUT_LIMIT})"
            )
        if kind == "s3":
            return self._s3_put_if(key, data, tag)
        if kind == "memory":
            with _MEMORY_LOCK:
                return self._compare_and_write(key, data, tag)
        if tag is None:
            return self._file_create(key, data)
        with self._file_lock(key):
            return self._compare_and_write(key, data, tag)

    def _compare_and_write(self, key: str, data: bytes, tag: str | None) -> bool:
        """Re-read, compare, write; the caller holds the key's lock."""
        try:
            found: str | None = _content_tag(self.get(key))
        except KeyError:
            found = None
        if found != tag:
            return False
        self.put_atomic(key, data)
        return True

    def _s3_put_if(self, key: str, data: bytes, tag: str | None) -> bool:
        bucket, name, _ = self.fs.split_path(self._path(key))
        condition = {"IfNoneMatch": "*"} if tag is None else {"IfMatch": tag}
        with translated("object store", f"write {key}"):
            try:
                self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, **condition)
            except FileNotFoundError:
                if tag is None:
                    raise  # no bucket: a real failure
                return False  # If-Match on a missing object
            except OSError as exc:
                if _lost_race(exc):
                    return False
                raise
        return True

    def _file_create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        self.fs.pipe_file(temporary, data)
        try:
            os.link(temporary, path)  # atomic, and fails if the name exists
        except FileExistsError:
            return False
        finally:
            Path(temporary).unlink()
        return True

    @contextlib.contextmanager
    def _file_lock(self, key: str) -> Iterator[None]:
        """An exclusive ``flock`` on the key's lock file, across processes on this host."""
        directory = f"{self.root}/{_LOCKS}"
        Path(directory).mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256(check_key(key).encode()).hexdigest()
        descriptor = os.open(f"{directory}/{name}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX)
                    break
                except OSError as exc:  # interrupted by a signal: wait again
                    if exc.errno != errno.EINTR:
                        raise
            yield
        finally:
            os.close(descriptor)  # closing releases the lock

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
        # A local atomic write's temporary (``<key>.tmp-<hex>``) is nobody's object yet.
        return iter(
            sorted(
                str(p)[start:]
                for p in found
                if str(p).startswith(below) and not (self.local and _TEMPORARY.search(str(p)))
            )
        )

    def delete(self, key: str) -> None:
        path = self._path(key)
        with translated("object store", f"delete {key}"):
            if self.fs.exists(path):
                self.fs.rm(path)
