"""The embedded ledger: SQLite from the standard library (``sqlite:///path`` or ``sqlite://``)."""
from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import threading
from typing import Iterator

from swarm.errors import BackendError, MasterLocked
from swarm.ledgers.sql import SqlLedger


class SqliteLedger(SqlLedger):
    """One connection, serialised by a lock; WAL so other processes can read and write too."""

    insert_ignore = "INSERT OR IGNORE"
    types = {
        "key": "TEXT",
        "text": "TEXT",
        "blob": "BLOB",
        "real": "REAL",
        "autoid": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "if_not_exists": "IF NOT EXISTS",
    }

    def __init__(self, path: str = ":memory:"):
        self.path = path
        self._lock = threading.RLock()
        try:
            self._conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            if path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL" if path == ":memory:" else "PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open SQLite ledger {path}: {exc}") from None
        self.init_schema()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise BackendError(f"SQLite ledger {self.path}: {exc}") from None
                raise
            finally:
                cur.close()

    # A lock row naming host and pid: a holder whose process is gone on this
    # host is taken over at once; one on another host when its lease expires.
    LOCK_LEASE = 60.0

    def lock_master(self, key: str, holder: str) -> None:
        me = f"{socket.gethostname()}:{os.getpid()}:{holder}"
        now = self.now()
        with self._tx() as cur:
            cur.execute("SELECT holder, expires_at FROM swarm_locks WHERE name = ?", (key,))
            row = cur.fetchone()
            if row is not None and row[0] != me and row[1] > now and _alive(row[0]):
                raise MasterLocked(key, row[0])
            cur.execute(
                "INSERT OR REPLACE INTO swarm_locks (name, holder, expires_at) VALUES (?, ?, ?)",
                (key, me, now + self.LOCK_LEASE),
            )

    def unlock_master(self, key: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM swarm_locks WHERE name = ?", (key,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _alive(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    if host != socket.gethostname():
        return True  # cannot tell from here: trust the lease
    try:
        os.kill(int(rest.split(":", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
