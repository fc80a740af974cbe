"""What every part of the SQL ledger stands on: the transaction, the dialect, and rows.

Statements are written with ``?`` placeholders and portable types; a
dialect (``swarm.ledgers.sqlite``, ``swarm.ledgers.mysql``) supplies the
connection, the transaction and the few spellings that differ between
databases.

Every write is safe to run twice: a dialect may repeat a transaction whose
COMMIT was sent but never acknowledged, so each write either is idempotent
or recognises that its own earlier run already landed.
"""
from __future__ import annotations

import abc
import contextlib
import time
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from swarm.errors import clip
from swarm.ledger import Message, MessageState, body_digest
from swarm.ledgers.group import SplitGroup
from swarm.limits import MAX_ERROR_CHARS

T = TypeVar("T")
Work = Callable[[Any], T]  # takes a DB-API cursor inside one transaction

MESSAGE_COLUMNS = "id, run_id, phase, stage, chunk, state, body, updated_at, digest, parent"


class SqlCore(abc.ABC):
    """The transaction and the dialect, which each part of ``SqlLedger`` builds its statements on."""

    types: Mapping[str, str] = {}
    lock_rows = ""  # what makes a SELECT lock the rows it reads, where a transaction needs it

    @staticmethod
    def now() -> float:
        """The ledger's clock: lease ends and update times go by it (tests set it)."""
        return time.time()

    @abc.abstractmethod
    def _transaction(self, work: Work[T]) -> T:
        """Run ``work(cursor)`` in one transaction: committed when it returns, rolled back when it raises.

        A dialect may run ``work`` again after a transient failure, so ``work``
        must be safe to repeat, also after an earlier run that committed.
        """

    def _group_transaction(self, work: Work[T]) -> T:
        """``_transaction`` for a group: ``SplitGroup`` when a member may be the cause of a failure."""
        try:
            return self._transaction(work)
        except Exception as exc:
            raise SplitGroup(str(exc)) from exc

    def _sql(self, statement: str) -> str:
        """Adapt a ``?``-placeholder statement to the driver."""
        return statement

    def _ddl(self, statement: str) -> str:
        return statement.format(**self.types)

    def _floor(self, expr: str) -> str:
        """The integer part of ``expr``, a number never below zero (SQLite may lack FLOOR)."""
        return f"CAST({expr} AS INTEGER)"

    def _insert_new(self, table: str, columns: str) -> str:
        """An INSERT that skips a row whose primary key exists and fails on anything else."""
        return f"INSERT INTO {table} ({columns}) VALUES ({marks(columns.split(','))}) ON CONFLICT DO NOTHING"

    def _create_index(self, cur: Any, name: str, table: str, columns: str) -> None:
        cur.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

    @abc.abstractmethod
    def _add_column(self, cur: Any, table: str, column: str, kind: str) -> None:
        """``ALTER TABLE table ADD COLUMN column kind`` unless the column exists."""

    def _schema_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while migrating, so that two processes do not run the same step at once."""
        return contextlib.nullcontext()

    # one-statement shortcuts ----------------------------------------------------

    def _rows(self, statement: str, args: Sequence[Any] = ()) -> list[tuple]:
        def work(cur: Any) -> list[tuple]:
            cur.execute(self._sql(statement), tuple(args))
            return list(cur.fetchall())

        return self._transaction(work)

    def _row(self, statement: str, args: Sequence[Any] = ()) -> tuple | None:
        rows = self._rows(statement, args)
        return rows[0] if rows else None

    def _write(self, statement: str, args: Sequence[Any] = ()) -> None:
        self._transaction(lambda cur: cur.execute(self._sql(statement), tuple(args)))

    def _write_many(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self._transaction(lambda cur: cur.executemany(self._sql(statement), [tuple(r) for r in rows]))


def message_row(m: Message, run_id: str, phase: str, state: MessageState, now: float,
                parent: str | None = None) -> tuple:
    """The message's row of ``swarm_messages``, in ``MESSAGE_COLUMNS`` order."""
    digest = None if m.body is None else body_digest(m.body)  # no body: the database refuses the row
    return (m.id, run_id, phase, m.stage, m.chunk, state, m.body, now, digest, parent)


def message_of(row: Sequence[Any]) -> Message:
    """The message in a row of ``id, stage, chunk, body``."""
    return Message(id=row[0], stage=row[1], chunk=row[2], body=bytes(row[3]))


def marks(values: Sequence[Any]) -> str:
    """One ``?`` per value, for an IN list."""
    return ", ".join("?" for _ in values)


def batches(rows: list, size: int) -> Iterator[list]:
    """``rows`` in slices of ``size``, to bound a statement's length."""
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def clip_error(text: str | None) -> str | None:
    """An error or reason cut to what the ledger keeps."""
    return None if text is None else clip(text, MAX_ERROR_CHARS)


def close_quietly(resource: Any) -> None:
    """Close a connection or cursor that may be broken already."""
    try:
        resource.close()
    except Exception:  # noqa: BLE001 - it is being thrown away
        pass
