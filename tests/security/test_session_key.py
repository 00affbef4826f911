"""``flts up`` never runs an open system: a fresh admin key at every start, in the configured
keys file (keeping its other keys) or in the home's, when the configured one is read-only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flts.cli import up
from flts.security import KeyRing, create_key
from flts.settings import Settings


def test_a_new_session_key_at_every_start(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    path, first = up._session_key(settings)
    assert path == (tmp_path / "api-keys.json").resolve()
    again, second = up._session_key(settings)
    ring = KeyRing(again)
    assert ring.authenticate(first) is None, "the previous run's key stops working"
    principal = ring.authenticate(second)
    assert principal is not None
    assert principal.scopes == {"forecast", "upload", "admin"}


def test_configured_keys_stay_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = tmp_path / "mounted" / "api-keys.json"
    ops = create_key(configured, "ops", ["admin"])
    settings = Settings(home=tmp_path / "home", security={"keys_file": configured})
    path, session = up._session_key(settings)
    assert path == configured.resolve()  # writable: the session key goes in beside ops
    ring = KeyRing(path)
    assert ring.authenticate(ops) is not None
    assert ring.authenticate(session) is not None

    # A read-only file (a mounted Secret): copied to the home, the original left alone.
    before = configured.read_text()
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: False if Path(p) == configured.resolve() else real_access(p, mode),
    )
    path, session = up._session_key(settings)
    assert path == (tmp_path / "home" / "api-keys.json").resolve()
    assert configured.read_text() == before
    ring = KeyRing(path)
    assert ring.authenticate(ops) is not None
    assert ring.authenticate(session) is not None
