"""API keys: minted once, stored only as salted hashes, verified on every request.

A key looks like ``flts_<key id>_<secret>``: the key id (12 hex digits, not secret) names the
stored entry, the secret (32 random bytes, URL-safe base64) is what proves possession. The
keys file holds, per key, its name, scopes, key id, a random salt and
``sha256(salt + secret)``; the plain key is printed once by ``flts keys create`` and never
written anywhere. A fast hash is the right one here: the secrets are 256-bit random values,
not passwords, so there is nothing for a slow hash to protect against, and a request must not
pay for one (docs/security.md).

:class:`KeyRing` is what a service checks a presented key against: the key id finds the entry
in a dict, the hash is compared in constant time, and a key that verified once is remembered
(only valid keys are, so the cache is as small as the file). The file is re-read when it
changes (key rotation through a Kubernetes Secret update).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from flts.exceptions import ConfigurationError

log = logging.getLogger(__name__)

Scope = Literal["forecast", "upload", "admin"]
#: Every scope a key can carry: ``forecast`` (the inference API), ``upload`` (the gateway's
#: datasets), ``admin`` (promote, rollback, history; and everything else).
SCOPES: tuple[Scope, ...] = ("forecast", "upload", "admin")
KEY_PREFIX = "flts"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"


class StoredKey(BaseModel):
    """One entry of the keys file: everything about a key except the key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME_PATTERN, description="Who holds the key (recorded as actor).")
    key_id: str = Field(pattern=r"^[0-9a-f]{12}$")
    scopes: tuple[Scope, ...] = Field(min_length=1)
    salt: str = Field(pattern=r"^[0-9a-f]{32}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))


class KeysFile(BaseModel):
    """The keys file: ``{"version": 1, "keys": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    keys: list[StoredKey] = Field(default_factory=list)


@dataclass(frozen=True)
class Principal:
    """Who made a request: the key's name and scopes."""

    name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        """``admin`` is allowed everything; other keys only their own scopes."""
        return scope in self.scopes or "admin" in self.scopes


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


def mint_key(name: str, scopes: Iterable[str]) -> tuple[str, StoredKey]:
    """A new random key and its stored entry; the key itself exists only in the return value."""
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    try:
        entry = StoredKey(
            name=name,
            key_id=key_id,
            scopes=tuple(dict.fromkeys(scopes)),  # checked against Scope by pydantic
            salt=salt,
            sha256=_digest(salt, secret),
        )
    except ValidationError as exc:
        raise ConfigurationError(
            *(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from exc
    return f"{KEY_PREFIX}_{key_id}_{secret}", entry


def read_keys(path: Path) -> KeysFile:
    """The keys file at ``path``; a missing one is empty, a damaged one a clear error."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return KeysFile()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the API keys file {path}: {exc}") from exc
    try:
        return KeysFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(
            f"API keys file {path} is not valid: {'.'.join(map(str, first['loc']))}: "
            f"{first['msg']} ({exc.error_count()} problems)"
        ) from exc


def write_keys(path: Path, document: KeysFile) -> None:
    """Replace the keys file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document.model_dump(mode="json"), indent=2) + "\n"
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        temporary.chmod(0o600)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def create_key(path: Path, name: str, scopes: Iterable[str], *, replace: bool = False) -> str:
    """Add a key named ``name`` to the file at ``path`` and return it (the only copy).

    A name already in the file is refused unless ``replace`` (then the old key stops working).
    """
    document = read_keys(path)
    if any(entry.name == name for entry in document.keys) and not replace:
        raise ConfigurationError(f"a key named {name!r} exists in {path}; revoke it first")
    key, entry = mint_key(name, scopes)
    document.keys = [e for e in document.keys if e.name != name] + [entry]
    write_keys(path, document)
    return key


def revoke_key(path: Path, name: str) -> bool:
    """Remove the key named ``name``; False when there was none."""
    document = read_keys(path)
    kept = [entry for entry in document.keys if entry.name != name]
    if len(kept) == len(document.keys):
        return False
    document.keys = kept
    write_keys(path, document)
    return True


class KeyRing:
    """The keys of one file, checked on every request (see the module docstring).

    ``path=None`` is a ring without keys: :attr:`configured` is False and nothing verifies.
    A configured file that is missing or damaged at start is a :class:`ConfigurationError`
    (a service must not start believing it is protected); a later bad rewrite keeps the keys
    read last and logs why.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._by_id: dict[str, StoredKey] = {}
        self._verified: dict[str, Principal] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._next_check = 0.0
        if path is not None:
            if not path.is_file():
                raise ConfigurationError(f"API keys file {path} does not exist (flts keys create)")
            self._load()
            self._next_check = clock() + reload_seconds

    @property
    def configured(self) -> bool:
        return self.path is not None

    def __len__(self) -> int:
        return len(self._by_id)

    def _file_stamp(self) -> tuple[int, int, int]:
        assert self.path is not None
        status = self.path.stat()
        return status.st_ino, status.st_size, status.st_mtime_ns

    def _load(self) -> None:
        assert self.path is not None
        stamp = self._file_stamp()
        document = read_keys(self.path)
        self._by_id = {entry.key_id: entry for entry in document.keys}
        self._verified = {}
        self._stamp = stamp

    def _maybe_reload(self, now: float) -> None:
        self._next_check = now + self.reload_seconds
        try:
            if self._file_stamp() != self._stamp:
                self._load()
                log.info("API keys reloaded from %s: %d keys", self.path, len(self._by_id))
        except (OSError, ConfigurationError) as exc:
            log.error("API keys file %s unreadable, keeping the keys read last: %s", self.path, exc)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a presented key, or None when it is not a valid key."""
        if self.path is None:
            return None
        now = self._clock()
        if now >= self._next_check:
            self._maybe_reload(now)
        principal = self._verified.get(token)
        if principal is not None:
            return principal
        prefix, _, rest = token.partition("_")
        key_id, _, secret = rest.partition("_")
        entry = self._by_id.get(key_id) if prefix == KEY_PREFIX and secret else None
        if entry is None or not hmac.compare_digest(entry.sha256, _digest(entry.salt, secret)):
            return None
        principal = Principal(entry.name, frozenset(entry.scopes))
        self._verified[token] = principal
        return principal
