"""Who may act in the console: the users file (scrypt hashes) and the token file.

With neither configured the console is read-only: every action is refused.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from swarm.errors import ConfigError

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 50 ms and 16 MiB a check: slow to guess, quick to log in
# Each check holds 16 MiB for about 50 ms: a flood of logins waits its turn instead of taking the memory.
CHECKS_AT_ONCE = threading.BoundedSemaphore(2)
TOKEN_IDENTITY = "token"  # who an action was taken by, when the token was shown
MIN_TOKEN_CHARS = 16


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``, salt and hash in base64."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return "$".join(["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)])


def verify_password(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=64 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Guard:
    """The users (name: hash) and the token that may act; neither: the console is read-only."""

    users: Mapping[str, str] = field(default_factory=dict)
    token: str | None = None

    @property
    def writable(self) -> bool:
        return bool(self.users) or self.token is not None

    def login(self, name: str, password: str) -> str | None:
        """The identity a login form's fields prove, or None. A blank name with the token logs in by token."""
        with CHECKS_AT_ONCE:
            return self._login(name, password)

    def _login(self, name: str, password: str) -> str | None:
        if not name and self.token is not None and hmac.compare_digest(password.encode(), self.token.encode()):
            return TOKEN_IDENTITY
        stored = self.users.get(name)
        if stored is None:
            hash_password(password)  # as long as a wrong password takes: the answer does not tell who exists
            return None
        return name if verify_password(stored, password) else None

    def bearer(self, authorization: str | None) -> str | None:
        """The identity an ``Authorization: Bearer <token>`` header proves, or None."""
        if self.token is None or not authorization:
            return None
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return TOKEN_IDENTITY if hmac.compare_digest(value.strip().encode(), self.token.encode()) else None


def load_guard(settings: Mapping[str, object]) -> Guard:
    """The guard of ``[console]``: its ``users_file`` and ``token_file``, read once at start."""
    users_file, token_file = str(settings["users_file"]), str(settings["token_file"])
    users = read_users(Path(users_file)) if users_file else {}
    token = read_token(Path(token_file)) if token_file else None
    return Guard(users, token)


def read_users(path: Path) -> dict[str, str]:
    """``name:hash`` lines; blank lines and ``#`` comments skipped; a bad line is an error naming it."""
    users: dict[str, str] = {}
    for number, line in enumerate(_read(path, "console.users_file").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not NAME.fullmatch(name) or not stored.startswith("scrypt$"):
            raise ConfigError(f"console.users_file {path} line {number}: expected name:scrypt$..., as "
                              f"`swarm ui --add-user NAME` writes it")
        users[name] = stored
    return users


def read_token(path: Path) -> str:
    token = _read(path, "console.token_file").strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"console.token_file {path} holds a token of {len(token)} characters; use "
                          f"{MIN_TOKEN_CHARS} or more, as "
                          f"`python3 -c 'import secrets; print(secrets.token_urlsafe())'` makes")
    return token


def _read(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None


def add_user(path: Path, name: str, password: str) -> None:
    """Add ``name`` to the users file, or change its password; the file is rewritten whole, mode 0600."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"user name {name!r}: use 1 to 64 letters, digits, dots, dashes or underscores")
    if not password:
        raise ConfigError("an empty password")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    kept = [line for line in lines if line.partition(":")[0].strip() != name]
    kept.append(f"{name}:{hash_password(password)}")
    fd, tmp = tempfile.mkstemp(dir=path.parent or Path("."), prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(kept) + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def new_secret() -> str:
    return secrets.token_urlsafe(32)
