"""A throwaway certificate authority for tests, made with the ``openssl`` command (no Python package needed).

``make_pki(folder)`` writes a CA, a server certificate for ``localhost`` and
``127.0.0.1``, a client certificate, and a second CA that signed none of them.
EC P-256 keys: each takes milliseconds to make.
"""
from __future__ import annotations

import dataclasses
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

SERVER_NAMES = "DNS:localhost,IP:127.0.0.1"
_CA_EXTENSIONS = ("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
_LEAF_EXTENSIONS = {
    "server": f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
              f"subjectAltName={SERVER_NAMES}\n",
    "client": "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
}


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here: trusting only it must fail verification


def make_pki(folder: Path) -> Pki:
    """Certificates and keys in ``folder``: certificates world-readable, keys readable by the owner only."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make test certificates: apt-get install openssl")
    folder.mkdir(parents=True, exist_ok=True)
    _self_signed(folder, "ca", "Swarm test CA")
    _self_signed(folder, "other-ca", "Some other CA")
    for role, name in (("server", "localhost"), ("client", "swarm-client")):
        _signed(folder, role, name)
    for cert in folder.glob("*.pem"):
        cert.chmod(0o644)
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
               folder / "client.key", folder / "other-ca.pem")


def _self_signed(folder: Path, stem: str, name: str) -> None:
    openssl(folder, "req", "-x509", *_new_key(f"{stem}.key"), "-out", f"{stem}.pem", "-days", "2",
             "-subj", f"/CN={name}", *_CA_EXTENSIONS)


def _signed(folder: Path, role: str, name: str) -> None:
    (folder / f"{role}.ext").write_text(_LEAF_EXTENSIONS[role])
    openssl(folder, "req", *_new_key(f"{role}.key"), "-out", f"{role}.csr", "-subj", f"/CN={name}")
    openssl(folder, "x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "2", "-extfile", f"{role}.ext",
             "-out", f"{role}.pem")


def _new_key(path: str) -> tuple[str, ...]:
    return ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", path)


def openssl(folder: Path, *args: str) -> None:
    """Run the openssl command in ``folder``; the test fails with its message if it does."""
    done = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed: {done.stderr.strip()}")
