"""One SQLite database shared by a process's threads: the embedded ledger's and table store's storage."""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import urllib.parse
from typing import Iterable, Iterator

from swarm.errors import BackendError

OPEN_PATIENCE = 30.0  # seconds an open waits for other processes opening the same file


class SqliteFile:
    """A connection serialised by a lock, in WAL mode so other processes can use the file too."""

    def __init__(self, path: str, what: str, schema: Iterable[str] = (), create: bool = True):
        """``create=False``: open an existing file only; a missing one is an error, never made empty."""
        self.path, self.what = path, what
        self._lock = threading.RLock()
        target, uri = path, False
        if not create and path != ":memory:":
            target, uri = f"file:{urllib.parse.quote(path)}?mode=rw", True
        try:
            self._conn = sqlite3.connect(target, timeout=30, isolation_level=None, check_same_thread=False, uri=uri)
            self._set_up(list(schema))
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open {what} {path}: {exc}") from None

    def _set_up(self, schema: list[str]) -> None:
        """WAL mode and the schema, waiting out other processes opening the same file at the same moment.

        Switching to WAL takes the file whole, and SQLite answers "database is
        locked" at once, without its busy wait, while another connection holds
        it: a master and its workers starting together would fail at random.
        """
        deadline = time.monotonic() + OPEN_PATIENCE
        while True:
            try:
                if self.path != ":memory:":
                    if str(self._conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                        self._conn.execute("PRAGMA journal_mode=WAL")
                    self._conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk when it returns
                for statement in schema:
                    self._conn.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A cursor in one write transaction: committed on exit, rolled back on error."""
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
                    raise BackendError(f"{self.what} {self.path}: {exc}") from None
                raise
            finally:
                cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
