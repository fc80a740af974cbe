"""The embedded table store: HBase's data model on SQLite (``embedded://`` or ``embedded:///path``).

Row keys and cell names are BLOBs, which SQLite orders by memcmp: the same
byte order as HBase. One version per cell is kept, with its timestamp.

Besides the ``TableStore`` role, ``scan_cells``, ``edit`` and ``increment``
give the cell-level operations the HBase development server
(``swarm.hbase_dev``) needs: timestamps, HBase's column addressing and
HBase's rule that a write with an older timestamp does not replace a newer
cell.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import struct
import time
from typing import Generator, Iterable, Iterator, Literal, Sequence

import msgpack

from swarm.effects import Delete, Put, to_bytes
from swarm.errors import TableError
from swarm.sqlite_file import SqliteFile
from swarm.table import Row, TableStore, prefix_stop

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, families BLOB NOT NULL, splits BLOB NOT NULL)",
    """CREATE TABLE IF NOT EXISTS cells (
        tbl TEXT NOT NULL, row BLOB NOT NULL, col BLOB NOT NULL, ts INTEGER NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (tbl, row, col)) WITHOUT ROWID""",
]


CellRow = tuple[bytes, dict[bytes, tuple[bytes, int]]]
_COUNTER = struct.Struct(">q")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclasses.dataclass(frozen=True)
class Edit:
    """One cell-level change to a row, addressed the way HBase addresses it.

    ``put`` writes ``column`` (``b"family:qualifier"``, the qualifier may be
    empty); ``delete`` removes exactly that cell; ``delete_family`` removes
    every cell of the family ``column`` (``b"family"``); ``delete_row`` removes
    the row (``column`` unused).
    """

    kind: Literal["put", "delete", "delete_family", "delete_row"]
    row: bytes
    column: bytes = b""
    value: bytes = b""


class EmbeddedTables(TableStore):
    """Ordered tables in one SQLite database, safe for many threads (one lock)."""

    def __init__(self, path: str = ":memory:"):
        self.path = path
        self._db = SqliteFile(path, "embedded table store", _SCHEMA)
        self._tx = self._db.transaction

    # tables -----------------------------------------------------------------

    def create_table(self, name: str, families: Iterable[str], splits: Iterable[bytes] = ()) -> None:
        fams = sorted({f.rstrip(":") for f in families})
        cuts = sorted({bytes(s) for s in splits if s})
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO meta (name, families, splits) VALUES (?, ?, ?)",
                (name, msgpack.packb(fams), msgpack.packb(cuts)),
            )

    def drop_table(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM cells WHERE tbl = ?", (name,))
            cur.execute("DELETE FROM meta WHERE name = ?", (name,))

    def tables(self) -> list[str]:
        with self._tx() as cur:
            cur.execute("SELECT name FROM meta ORDER BY name")
            return [r[0] for r in cur.fetchall()]

    def families(self, name: str) -> list[str]:
        return self._meta(name)[0]

    def regions(self, name: str) -> list[tuple[bytes, bytes]]:
        cuts = self._meta(name)[1]
        bounds = [b"", *cuts, b""]
        return list(zip(bounds[:-1], bounds[1:], strict=True))

    def _meta(self, name: str) -> tuple[list[str], list[bytes]]:
        with self._tx() as cur:
            cur.execute("SELECT families, splits FROM meta WHERE name = ?", (name,))
            row = cur.fetchone()
        if row is None:
            raise TableError(f"table {name!r} does not exist")
        return msgpack.unpackb(row[0]), msgpack.unpackb(row[1])

    # reads ------------------------------------------------------------------

    def scan(self, name, start=b"", stop=b"", prefix=None, columns=None, batch_size=1000) -> Iterator[Row]:
        if prefix is not None:
            start, stop = prefix, prefix_stop(prefix)
        for key, cells in self.scan_cells(name, start, stop, columns, batch_size):
            yield key, {col: value for col, (value, _) in cells.items()}

    def scan_cells(
        self,
        name: str,
        start: bytes = b"",
        stop: bytes = b"",
        columns: Sequence[bytes] | None = None,
        batch_size: int = 1000,
    ) -> Generator[CellRow, None, None]:  # a generator: a reader that stops early closes it
        """Like ``scan`` (without ``prefix``), with each cell's timestamp: ``{col: (value, ts)}``."""
        self._meta(name)
        after: bytes | None = None
        while True:
            keys = self._next_keys(name, start, stop, after, batch_size)
            if not keys:
                return
            yield from self._rows(name, keys, columns)
            if len(keys) < batch_size:
                return
            after = keys[-1]

    def _next_keys(self, name: str, start: bytes, stop: bytes, after: bytes | None, limit: int) -> list[bytes]:
        sql = "SELECT DISTINCT row FROM cells WHERE tbl = ?"
        args: list[str | bytes] = [name]
        if after is not None:
            sql += " AND row > ?"
            args.append(after)
        elif start:
            sql += " AND row >= ?"
            args.append(start)
        if stop:
            sql += " AND row < ?"
            args.append(stop)
        with self._tx() as cur:
            cur.execute(sql + " ORDER BY row LIMIT ?", (*args, int(limit)))
            return [bytes(r[0]) for r in cur.fetchall()]

    def _rows(self, name: str, keys: list[bytes], columns: Sequence[bytes] | None) -> Iterator[CellRow]:
        with self._tx() as cur:
            cur.execute(
                "SELECT row, col, value, ts FROM cells WHERE tbl = ? AND row >= ? AND row <= ? ORDER BY row, col",
                (name, keys[0], keys[-1]),
            )
            found = cur.fetchall()
        current: bytes | None = None
        cells: dict[bytes, tuple[bytes, int]] = {}
        for row, col, value, ts in found:
            row, col = bytes(row), bytes(col)
            if row != current:
                if current is not None and cells:
                    yield current, cells
                current, cells = row, {}
            if _wanted(col, columns):
                cells[col] = (bytes(value), int(ts))
        if current is not None and cells:
            yield current, cells

    def row(self, name: str, key: bytes, columns: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
        return {col: value for col, (value, _) in self.row_cells(name, key, columns).items()}

    def row_cells(self, name: str, key: bytes,
                  columns: Sequence[bytes] | None = None) -> dict[bytes, tuple[bytes, int]]:
        """The row's cells with their timestamps (milliseconds)."""
        with self._tx() as cur:
            cur.execute("SELECT col, value, ts FROM cells WHERE tbl = ? AND row = ? ORDER BY col", (name, key))
            found = cur.fetchall()
        return {bytes(c): (bytes(v), int(ts)) for c, v, ts in found if _wanted(bytes(c), columns)}

    # writes -----------------------------------------------------------------

    def _apply(self, mutations: Sequence[Put | Delete]) -> None:
        ts = now_ms()
        with self._tx() as cur:
            self._check_columns(cur, mutations)
            for m in mutations:
                if isinstance(m, Put):
                    cur.executemany(
                        "INSERT OR REPLACE INTO cells (tbl, row, col, ts, value) VALUES (?, ?, ?, ?, ?)",
                        [(m.table, m.row, col, ts, value) for col, value in m.cells.items()],
                    )
                elif m.columns is None:
                    cur.execute("DELETE FROM cells WHERE tbl = ? AND row = ?", (m.table, m.row))
                else:
                    for col in m.columns:  # to_bytes only tells the type: the writes are normalised
                        self._delete_column(cur, m.table, to_bytes(m.row), to_bytes(col))

    def _check_columns(self, cur: sqlite3.Cursor, mutations: Sequence[Put | Delete]) -> None:
        """Writing to a table or column family that does not exist is an error, as on HBase."""
        families = {name: self._families(cur, name) for name in {m.table for m in mutations}}
        for m in mutations:
            columns = m.cells if isinstance(m, Put) else (m.columns or ())
            for column in columns:
                family = to_bytes(column).split(b":", 1)[0]
                if family not in families[m.table]:
                    raise TableError(f"column family {family.decode(errors='replace')!r} does not exist in table "
                                     f"{m.table!r} (it has {', '.join(f.decode() for f in sorted(families[m.table]))})")

    @staticmethod
    def _families(cur: sqlite3.Cursor, name: str) -> set[bytes]:
        cur.execute("SELECT families FROM meta WHERE name = ?", (name,))
        row = cur.fetchone()
        if row is None:
            raise TableError(f"table {name!r} does not exist")
        return {f.encode() if isinstance(f, str) else bytes(f) for f in msgpack.unpackb(row[0])}

    @staticmethod
    def _delete_column(cur: sqlite3.Cursor, table: str, row: bytes, col: bytes) -> None:
        if col.endswith(b":"):  # a whole family
            cur.execute(
                "DELETE FROM cells WHERE tbl = ? AND row = ? AND col >= ? AND col < ?",
                (table, row, col, prefix_stop(col)),
            )
        else:
            cur.execute("DELETE FROM cells WHERE tbl = ? AND row = ? AND col = ?", (table, row, col))

    def edit(self, name: str, edits: Sequence[Edit], timestamp: int | None = None) -> None:
        """Apply cell-level edits in order, in one transaction, with HBase's timestamp rules.

        Everything is stamped ``timestamp`` (default: now). A put does not
        replace a cell with a newer timestamp; a delete removes only cells
        whose timestamp is not newer. Only the latest version of a cell is
        kept, so there are no delete markers.
        """
        ts = now_ms() if timestamp is None else int(timestamp)
        with self._tx() as cur:
            for e in edits:
                self._edit(cur, name, e, ts)

    @staticmethod
    def _edit(cur: sqlite3.Cursor, table: str, e: Edit, ts: int) -> None:
        if e.kind == "put":
            cur.execute(
                """INSERT INTO cells (tbl, row, col, ts, value) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT (tbl, row, col) DO UPDATE SET ts = excluded.ts, value = excluded.value
                   WHERE excluded.ts >= cells.ts""",
                (table, e.row, e.column, ts, e.value),
            )
            return
        sql, args = "DELETE FROM cells WHERE tbl = ? AND row = ? AND ts <= ?", [table, e.row, ts]
        if e.kind == "delete":
            sql += " AND col = ?"
            args.append(e.column)
        elif e.kind == "delete_family":
            family = e.column + b":"
            sql += " AND col >= ? AND col < ?"
            args += [family, prefix_stop(family)]
        elif e.kind != "delete_row":
            raise ValueError(f"unknown edit kind {e.kind!r}")
        cur.execute(sql, args)

    def increment(self, name: str, row: bytes, column: bytes, amount: int) -> int:
        """Add ``amount`` to a 64-bit big-endian counter cell atomically; the new value.

        A missing cell counts as 0. ``ValueError`` if the cell is not 8 bytes wide.
        """
        with self._tx() as cur:
            cur.execute("SELECT value FROM cells WHERE tbl = ? AND row = ? AND col = ?", (name, row, column))
            found = cur.fetchone()
            current = 0
            if found is not None:
                if len(found[0]) != _COUNTER.size:
                    raise ValueError(f"cell {column!r} of row {row!r} is not a 64-bit counter ({len(found[0])} bytes)")
                current = _COUNTER.unpack(found[0])[0]
            value = current + int(amount)
            cur.execute(
                "INSERT OR REPLACE INTO cells (tbl, row, col, ts, value) VALUES (?, ?, ?, ?, ?)",
                (name, row, column, now_ms(), _COUNTER.pack(value)),
            )
            return value

    def close(self) -> None:
        self._db.close()


def _wanted(col: bytes, columns: Sequence[bytes] | None) -> bool:
    if not columns:
        return True
    family = col.split(b":", 1)[0] + b":"
    return col in columns or family in columns or family[:-1] in columns
