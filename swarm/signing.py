"""The site key: every envelope is signed with it, and a worker runs only what it signed.

An envelope's signature is an HMAC-SHA256 over its encoded contents, made
with the site's current key. Workers accept the current key and, while a
rotation is under way, the previous one. A key never appears in a log or
an error: only its id, a short digest that names it without revealing it.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Mapping

from swarm.errors import BadMessage, ConfigError

MIN_KEY_BYTES = 32
_DOMAIN = b"swarm-envelope-v2\x00"  # a signature made for anything else never verifies here


def key_id(key: bytes) -> str:
    """A short public name for ``key``: which key signed a message, without revealing it."""
    return hashlib.sha256(b"swarm-key-id\x00" + key).hexdigest()[:12]


class SiteKeys:
    """The current signing key and, during a rotation, the previous one."""

    def __init__(self, current: bytes, previous: bytes | None = None):
        for name, key in (("current", current), ("previous", previous)):
            if key is not None and len(key) < MIN_KEY_BYTES:
                raise ConfigError(f"the {name} site key is {len(key)} bytes; it needs at least {MIN_KEY_BYTES}")
        self._current = current
        self._by_id = {key_id(current): current}
        if previous is not None:
            self._by_id.setdefault(key_id(previous), previous)
        self.current_id = key_id(current)

    def __repr__(self) -> str:
        return f"SiteKeys(ids={sorted(self._by_id)})"

    @classmethod
    def ephemeral(cls) -> "SiteKeys":
        """A random key for one process: the embedded, in-process setup, where nothing else needs it."""
        return cls(secrets.token_bytes(MIN_KEY_BYTES))

    def sign(self, data: bytes) -> tuple[str, bytes]:
        """(key id, signature) of ``data`` with the current key."""
        return self.current_id, _mac(self._current, data)

    def verify(self, kid: str, signature: bytes, data: bytes) -> None:
        """``BadMessage`` unless ``signature`` is ``data``'s under the key ``kid`` names."""
        key = self._by_id.get(kid)
        if key is None:
            raise BadMessage(f"signed with key {kid[:16]!r}, which is neither the current nor the previous site key")
        if not hmac.compare_digest(_mac(key, data), signature):
            raise BadMessage(f"bad signature (key {kid}): the envelope was altered or forged")


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + data, hashlib.sha256).digest()


_process_keys: SiteKeys | None = None


def process_keys() -> SiteKeys:
    """This process's ephemeral keys, the default where no site key is configured and nothing leaves the process."""
    global _process_keys
    if _process_keys is None:
        _process_keys = SiteKeys.ephemeral()
    return _process_keys


def for_site(security: Mapping[str, str], broker_url: str) -> SiteKeys:
    """The site's keys from the ``[security]`` settings; in-process ones only where nothing leaves the process."""
    keys = from_settings(security)
    if keys is not None:
        return keys
    if broker_url.startswith("memory:"):
        return process_keys()
    raise ConfigError(
        "security.key_file: a shared broker needs the site key that signs and checks every message. Make one "
        "with `openssl rand -hex 32 > /etc/swarm/site.key` (mode 0600, readable by the service user) and set "
        "security.key_file (or SWARM_SECURITY_KEY_FILE) on every host"
    )


def from_settings(security: Mapping[str, str]) -> SiteKeys | None:
    """The keys the ``[security]`` settings name; None when none is configured."""
    current = _read(security, "key")
    if current is None:
        if _read(security, "previous_key") is not None:
            raise ConfigError("security.previous_key_file is set but no current key: set security.key_file")
        return None
    return SiteKeys(current, _read(security, "previous_key"))


def _read(security: Mapping[str, str], name: str) -> bytes | None:
    """A key from ``<name>_file`` or from the ``<name>`` setting (set only from the environment)."""
    path, value = security.get(f"{name}_file", ""), security.get(name, "")
    if path and value:
        raise ConfigError(f"security.{name}_file and SWARM_SECURITY_{name.upper()} are both set: use one")
    if value:
        return value.strip().encode()
    if not path:
        return None
    try:
        text = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"security.{name}_file: cannot read {path}: {exc.strerror or exc}") from None
    if not text:
        raise ConfigError(f"security.{name}_file: {path} is empty")
    if os.name == "posix" and Path(path).stat().st_mode & 0o077 & ~0o040:
        raise ConfigError(f"security.{name}_file: {path} is readable by others; make it mode 0600 or 0640")
    return text
