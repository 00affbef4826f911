"""API keys: stored only as salted hashes, verified by key id and hash, scopes enforced, the
file re-read on change; ``flts keys`` creates (printing the key once), lists and revokes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flts.cli import app as cli
from flts.exceptions import ConfigurationError
from flts.security import KeyRing, create_key, read_keys, revoke_key


def test_the_file_holds_hashes_never_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = create_key(path, "alice", ["forecast", "upload"])
    second = create_key(path, "bob", ["forecast"])
    text = path.read_text()
    for key in (first, second):
        assert key.startswith("flts_")
        assert key not in text
        assert key.rsplit("_", 1)[1] not in text  # not the secret part either
    entries = read_keys(path).keys
    assert [e.name for e in entries] == ["alice", "bob"]
    assert entries[0].salt != entries[1].salt  # a salt per key
    assert path.stat().st_mode & 0o077 == 0  # owner only


def test_keyring_verifies_and_knows_the_scopes(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "alice", ["upload"])
    ring = KeyRing(path)
    principal = ring.authenticate(key)
    assert principal is not None
    assert principal.name == "alice"
    assert principal.allows("upload")
    assert not principal.allows("forecast")
    assert not principal.allows("admin")
    key_id = key.split("_")[1]
    for wrong in ("", "flts", key + "x", key[:-1], f"flts_{key_id}_", "Bearer " + key):
        assert ring.authenticate(wrong) is None, wrong
    assert ring.authenticate(key) is principal  # the cached answer


def test_admin_keys_may_do_everything(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = create_key(path, "root", ["admin"])
    principal = KeyRing(path).authenticate(key)
    assert principal is not None
    assert all(principal.allows(scope) for scope in ("forecast", "upload", "admin"))


def test_rotation_and_revocation_are_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = create_key(path, "alice", ["forecast"])
    now = [0.0]
    ring = KeyRing(path, reload_seconds=5.0, clock=lambda: now[0])
    assert ring.authenticate(old) is not None
    new = create_key(path, "alice", ["forecast"], replace=True)
    assert ring.authenticate(new) is None  # not yet re-read
    now[0] = 6.0
    assert ring.authenticate(new) is not None
    assert ring.authenticate(old) is None  # the replaced key stopped working, cache too
    assert revoke_key(path, "alice")
    now[0] = 12.0
    assert ring.authenticate(new) is None
    # A damaged rewrite keeps the keys read last instead of locking everyone out (or in).
    keep = create_key(path, "bob", ["forecast"])
    now[0] = 18.0
    assert ring.authenticate(keep) is not None
    path.write_text("{broken")
    now[0] = 24.0
    assert ring.authenticate(keep) is not None


def test_bad_names_scopes_and_files_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    with pytest.raises(ConfigurationError, match="scopes"):
        create_key(path, "alice", ["everything"])
    with pytest.raises(ConfigurationError, match="name"):
        create_key(path, "no spaces", ["forecast"])
    create_key(path, "alice", ["forecast"])
    with pytest.raises(ConfigurationError, match="exists"):
        create_key(path, "alice", ["forecast"])
    path.write_text('{"version": 1, "keys": [{"name": "x"}]}')
    with pytest.raises(ConfigurationError, match="not valid"):
        KeyRing(path)


def test_cli_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLTS_HOME", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "ci", "--scope", "upload", "-s", "forecast"])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    path = tmp_path / "api-keys.json"  # the home's default keys file
    principal = KeyRing(path).authenticate(key)
    assert principal is not None
    assert principal.scopes == {"upload", "forecast"}
    listed = runner.invoke(cli, ["keys", "list"])
    assert listed.exit_code == 0
    assert "ci" in listed.stdout
    assert key not in listed.stdout
    bad = runner.invoke(cli, ["keys", "create", "x", "--scope", "root"])
    assert bad.exit_code == 2  # a usage error: root is not a scope
    assert "root" in bad.output
    assert runner.invoke(cli, ["keys", "revoke", "ci"]).exit_code == 0
    assert runner.invoke(cli, ["keys", "revoke", "ci"]).exit_code == 1
    assert KeyRing(path).authenticate(key) is None
