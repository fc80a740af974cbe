"""The embedded ledger: SQLite from the standard library (``sqlite:///path`` or ``sqlite://``)."""
from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import urllib.parse
from typing import Any

from swarm.errors import BackendError, LedgerNotFound, MasterLocked
from swarm.ledgers.core import T, Work
from swarm.ledgers.sql import SqlLedger
from swarm.sqlite_file import SqliteFile


class SqliteLedger(SqlLedger):
    """One connection, serialised by a lock; WAL so other processes can read and write too."""

    types = {
        "key": "TEXT",
        "text": "TEXT",
        "blob": "BLOB",
        "real": "REAL",
        "autoid": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "table_options": "",
    }

    def __init__(self, path: str = ":memory:", create: bool = True):
        """``create=False``: use the ledger already at ``path``, else raise ``LedgerNotFound``."""
        super().__init__()
        self.path = path
        if not create and path != ":memory:" and not os.path.isfile(path):
            raise LedgerNotFound(f"no ledger found at {os.path.abspath(path)}")
        self._db = SqliteFile(path, "SQLite ledger", create=create)
        if not create and path != ":memory:" and not self._has_schema():
            self._db.close()
            raise LedgerNotFound(f"no ledger found at {os.path.abspath(path)}: the file has no Swarm schema")
        self.init_schema()

    def _has_schema(self) -> bool:
        def work(cur: Any) -> bool:
            cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'swarm_schema'")
            return cur.fetchone() is not None

        return self._transaction(work)

    def _add_column(self, cur: Any, table: str, column: str, kind: str) -> None:
        cur.execute(f"PRAGMA table_info({table})")
        if column not in {row[1] for row in cur.fetchall()}:
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _transaction(self, work: Work[T]) -> T:
        with self._db.transaction() as cur:
            return work(cur)

    # A lock row naming host and pid: a holder whose process is gone on this
    # host is taken over at once; one on another host when its lease expires.
    LOCK_LEASE = 60.0

    def lock_master(self, key: str, holder: str) -> None:
        me = f"{socket.gethostname()}:{os.getpid()}:{holder}"
        now = self.now()

        def work(cur: Any) -> None:
            cur.execute("SELECT holder, expires_at FROM swarm_locks WHERE name = ?", (key,))
            row = cur.fetchone()
            if row is not None and row[0] != me and row[1] > now and _alive(row[0]):
                raise MasterLocked(key, row[0])
            cur.execute(
                "INSERT OR REPLACE INTO swarm_locks (name, holder, expires_at) VALUES (?, ?, ?)",
                (key, me, now + self.LOCK_LEASE),
            )

        self._transaction(work)

    def unlock_master(self, key: str) -> None:
        self._write("DELETE FROM swarm_locks WHERE name = ?", (key,))

    def master_holder(self, key: str) -> str | None:
        # Held as lock_master sees it: the lease not over, and the holder's process alive if on this host.
        row = self._row("SELECT holder FROM swarm_locks WHERE name = ? AND expires_at > ?", (key, self.now()))
        return row[0] if row is not None and _alive(row[0]) else None

    def close(self) -> None:
        self._db.close()


def stored_schema_version(path: str) -> int | None:
    """The schema version of the ledger file at ``path``, None when it holds no Swarm schema.

    Read-only: unlike ``SqliteLedger``, which migrates an older schema when
    it opens one, this changes nothing. ``LedgerNotFound`` if there is no file.
    """
    if not os.path.isfile(path):
        raise LedgerNotFound(f"no ledger found at {os.path.abspath(path)}")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'swarm_schema'")
            if found.fetchone() is None:
                return None
            row = db.execute("SELECT version FROM swarm_schema").fetchone()
    except sqlite3.Error as exc:
        raise BackendError(f"SQLite ledger {os.path.abspath(path)}: {exc}") from None
    return 0 if row is None else int(row[0])


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
