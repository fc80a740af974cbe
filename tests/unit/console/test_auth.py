"""Who may act: the users file `swarm ui --add-user` writes, its scrypt hashes, the token file."""
from __future__ import annotations

import io
import stat

import pytest

from swarm import cli
from swarm.console.auth import Guard, add_user, hash_password, read_token, read_users, verify_password
from swarm.errors import ConfigError


def test_a_password_verifies_against_its_hash_only():
    stored = hash_password("s3cret pass")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password(stored, "s3cret pass") and not verify_password(stored, "s3cret pas")
    assert hash_password("s3cret pass") != stored  # salted
    assert not verify_password("scrypt$not$a$hash", "x") and not verify_password("md5$abc", "x")


def test_swarm_ui_add_user_writes_a_private_users_file_and_replaces_a_password(tmp_path, monkeypatch):
    users = tmp_path / "users"
    config = tmp_path / "swarm.toml"
    config.write_text(f'[console]\nusers_file = "{users}"\n')
    for password in ("first password", "second password"):
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        assert cli.main(["--config", str(config), "ui", "--add-user", "alice"]) == 0
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    found = read_users(users)
    assert list(found) == ["alice"] and verify_password(found["alice"], "second password")
    guard = Guard(found)
    assert guard.login("alice", "second password") == "alice" and guard.login("alice", "first password") is None


def test_a_bad_users_file_line_is_named(tmp_path):
    users = tmp_path / "users"
    users.write_text("# operators\n\nalice:plaintext\n")
    with pytest.raises(ConfigError, match="line 3: expected name:scrypt"):
        read_users(users)


def test_a_short_token_is_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("short\n")
    with pytest.raises(ConfigError, match="16 or more"):
        read_token(token)
    token.write_text("x" * 20 + "\n")
    assert Guard(token=read_token(token)).bearer("Bearer " + "x" * 20) == "token"
    assert Guard(token=read_token(token)).bearer("Basic " + "x" * 20) is None
