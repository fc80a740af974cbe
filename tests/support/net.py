"""Ports on this machine: a free one to listen on, and whether something listens on one."""
from __future__ import annotations

import contextlib
import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the OS's choice); another process could take it before it is used."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def listening(port: int, host: str = HOST) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False
