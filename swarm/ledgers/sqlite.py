"""The embedded ledger: SQLite from the standard library (``sqlite:///path`` or ``sqlite://``)."""
from __future__ import annotations

import os
import socket
from typing import Any

from swarm.errors import LedgerNotFound, MasterLocked
from swarm.sqlite_file import SqliteFile
from swarm.ledgers.sql import SqlLedger, T, Work


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

    def close(self) -> None:
        self._db.close()


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
