"""The ledger in SQL, shared by the SQLite and MySQL implementations.

Statements are written with ``?`` placeholders and portable types; a
subclass supplies the connection, the transaction and the few spellings
that differ between databases.
"""
from __future__ import annotations

import abc
import contextlib
import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

from swarm.errors import Fenced
from swarm.ledger import (
    M_CLAIMED, M_DEAD, M_DONE, M_PLANNED, M_QUEUED, PLANNED,
    Claim, DeadLetterRecord, Failure, Ledger, Message, Run,
)

SCHEMA_VERSION = 1
MAX_ERROR_CHARS = 16_000

# {name} placeholders are filled by the dialect: key (indexed string),
# blob (message body), text (errors, params), real (timestamps), autoid.
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS swarm_schema (version INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS swarm_runs (
        id {key} PRIMARY KEY, job {key} NOT NULL, params {text} NOT NULL,
        status VARCHAR(16) NOT NULL, phase {key}, error {text},
        created_at {real} NOT NULL, updated_at {real} NOT NULL, finished_at {real})""",
    """CREATE TABLE IF NOT EXISTS swarm_phases (
        run_id {key} NOT NULL, phase {key} NOT NULL, state VARCHAR(16) NOT NULL,
        updated_at {real} NOT NULL, PRIMARY KEY (run_id, phase))""",
    """CREATE TABLE IF NOT EXISTS swarm_messages (
        id {key} PRIMARY KEY, run_id {key} NOT NULL, phase {key} NOT NULL,
        stage {key} NOT NULL, chunk {key} NOT NULL, state VARCHAR(16) NOT NULL,
        token BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        holder {key}, lease_until {real}, error {text}, body {blob} NOT NULL,
        updated_at {real} NOT NULL)""",
    """CREATE INDEX {if_not_exists} swarm_messages_run_state ON swarm_messages (run_id, state, phase)""",
    """CREATE TABLE IF NOT EXISTS swarm_counters (
        message_id {key} NOT NULL, name {key} NOT NULL, run_id {key} NOT NULL,
        value BIGINT NOT NULL, PRIMARY KEY (message_id, name))""",
    """CREATE INDEX {if_not_exists} swarm_counters_run ON swarm_counters (run_id)""",
    """CREATE TABLE IF NOT EXISTS swarm_dead_letters (
        id {autoid}, queue {key} NOT NULL, message_id {key}, reason {text} NOT NULL,
        body {blob} NOT NULL, created_at {real} NOT NULL, replayed_at {real})""",
    """CREATE TABLE IF NOT EXISTS swarm_locks (
        name {key} PRIMARY KEY, holder {key} NOT NULL, expires_at {real} NOT NULL)""",
]

_RUN_COLUMNS = "id, job, params, status, phase, error, created_at, updated_at, finished_at"


class SqlLedger(Ledger, abc.ABC):
    """Everything but the connection and the dialect."""

    insert_ignore = "INSERT OR IGNORE"
    types: Mapping[str, str] = {}

    @abc.abstractmethod
    def _tx(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor inside one transaction: committed on exit, rolled back on error."""

    def _sql(self, statement: str) -> str:
        """Adapt a ``?``-placeholder statement to the driver."""
        return statement

    # schema -----------------------------------------------------------------

    def init_schema(self) -> None:
        with self._tx() as cur:
            for statement in SCHEMA:
                cur.execute(statement.format(**self.types))
            cur.execute("SELECT version FROM swarm_schema")
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql("INSERT INTO swarm_schema (version) VALUES (?)"), (SCHEMA_VERSION,))

    def schema_version(self) -> int | None:
        with self._tx() as cur:
            cur.execute("SELECT version FROM swarm_schema")
            row = cur.fetchone()
        return None if row is None else int(row[0])

    # runs -------------------------------------------------------------------

    def open_run(self, run_id: str, job: str, params: Mapping[str, Any]) -> Run:
        now = self.now()
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    f"{self.insert_ignore} INTO swarm_runs ({_RUN_COLUMNS}) "
                    "VALUES (?, ?, ?, 'running', NULL, NULL, ?, ?, NULL)"
                ),
                (run_id, job, json.dumps(dict(params), sort_keys=True), now, now),
            )
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        with self._tx() as cur:
            cur.execute(self._sql(f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE id = ?"), (run_id,))
            row = cur.fetchone()
        return None if row is None else _run(row)

    def runs(self, job=None, status=None, since=None, until=None, text=None, limit=100) -> list[Run]:
        where, args = [], []
        for clause, value in (
            ("job = ?", job), ("status = ?", status), ("created_at >= ?", since), ("created_at < ?", until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if text:
            where.append("error LIKE ?")
            args.append(f"%{text}%")
        sql = f"SELECT {_RUN_COLUMNS} FROM swarm_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        with self._tx() as cur:
            cur.execute(self._sql(sql), (*args, int(limit)))
            return [_run(r) for r in cur.fetchall()]

    def update_run(self, run_id, *, status=None, phase=None, error=None, finished=False) -> None:
        sets, args = ["updated_at = ?"], [self.now()]
        for column, value in (("status", status), ("phase", phase), ("error", _clip(error))):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if status == "running":
            sets.append("error = NULL")
            sets.append("finished_at = NULL")
        if finished:
            sets.append("finished_at = ?")
            args.append(self.now())
        with self._tx() as cur:
            cur.execute(self._sql(f"UPDATE swarm_runs SET {', '.join(sets)} WHERE id = ?"), (*args, run_id))

    def phase_state(self, run_id: str, phase: str) -> str | None:
        with self._tx() as cur:
            cur.execute(self._sql("SELECT state FROM swarm_phases WHERE run_id = ? AND phase = ?"), (run_id, phase))
            row = cur.fetchone()
        return None if row is None else row[0]

    def set_phase_state(self, run_id: str, phase: str, state: str) -> None:
        with self._tx() as cur:
            self._set_phase(cur, run_id, phase, state)

    def _set_phase(self, cur, run_id: str, phase: str, state: str) -> None:
        now = self.now()
        cur.execute(
            self._sql("UPDATE swarm_phases SET state = ?, updated_at = ? WHERE run_id = ? AND phase = ?"),
            (state, now, run_id, phase),
        )
        cur.execute(
            self._sql(f"{self.insert_ignore} INTO swarm_phases (run_id, phase, state, updated_at) VALUES (?, ?, ?, ?)"),
            (run_id, phase, state, now),
        )

    # plan -------------------------------------------------------------------

    def save_plan(self, run_id: str, phase: str, messages: Sequence[Message]) -> None:
        now = self.now()
        rows = [(m.id, run_id, phase, m.stage, m.chunk, M_PLANNED, m.body, now) for m in messages]
        with self._tx() as cur:
            for batch in _batches(rows, 1000):
                cur.executemany(self._sql(self._insert_message_sql()), batch)
            self._set_phase(cur, run_id, phase, PLANNED)

    def _insert_message_sql(self) -> str:
        return (
            f"{self.insert_ignore} INTO swarm_messages "
            "(id, run_id, phase, stage, chunk, state, body, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def planned(self, run_id: str, phase: str, limit: int) -> list[Message]:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, body FROM swarm_messages "
                    "WHERE run_id = ? AND state = ? AND phase = ? ORDER BY id LIMIT ?"
                ),
                (run_id, M_PLANNED, phase, int(limit)),
            )
            return [_message(r) for r in cur.fetchall()]

    def mark_queued(self, ids: Sequence[str]) -> None:
        now = self.now()
        with self._tx() as cur:
            cur.executemany(
                self._sql("UPDATE swarm_messages SET state = ?, updated_at = ? WHERE id = ? AND state = ?"),
                [(M_QUEUED, now, i, M_PLANNED) for i in ids],
            )

    # workers ----------------------------------------------------------------

    def claim(self, run_id: str, phase: str, msg: Message, holder: str, lease: float) -> Claim:
        now = self.now()
        with self._tx() as cur:
            cur.execute(
                self._sql(self._insert_message_sql()),
                (msg.id, run_id, phase, msg.stage, msg.chunk, M_QUEUED, msg.body, now),
            )
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, token = token + 1, attempts = attempts + 1, "
                    "holder = ?, lease_until = ?, updated_at = ? "
                    "WHERE id = ? AND (state IN (?, ?) OR (state = ? AND lease_until < ?))"
                ),
                (M_CLAIMED, holder, now + lease, now, msg.id, M_PLANNED, M_QUEUED, M_CLAIMED, now),
            )
            granted = cur.rowcount == 1
            cur.execute(self._sql("SELECT state, token, attempts FROM swarm_messages WHERE id = ?"), (msg.id,))
            state, token, attempts = cur.fetchone()
        if granted:
            return Claim(token=int(token), attempts=int(attempts))
        return Claim(token=None, attempts=int(attempts), state=state)

    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> None:
        if not leases:
            return
        until = self.now() + lease
        with self._tx() as cur:
            cur.executemany(
                self._sql("UPDATE swarm_messages SET lease_until = ? WHERE id = ? AND token = ? AND state = ?"),
                [(until, msg_id, token, M_CLAIMED) for msg_id, token in leases],
            )

    def complete(self, msg_id, token, run_id, phase, children, counts) -> None:
        now = self.now()
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, lease_until = NULL, updated_at = ? "
                    "WHERE id = ? AND token = ? AND state = ?"
                ),
                (M_DONE, now, msg_id, token, M_CLAIMED),
            )
            if cur.rowcount != 1:
                raise Fenced(f"message {msg_id}: lease token {token} is no longer current")
            if children:
                cur.executemany(
                    self._sql(self._insert_message_sql()),
                    [(c.id, run_id, phase, c.stage, c.chunk, M_QUEUED, c.body, now) for c in children],
                )
            if counts:
                cur.executemany(
                    self._sql(
                        f"{self.insert_ignore} INTO swarm_counters (message_id, name, run_id, value) VALUES (?, ?, ?, ?)"
                    ),
                    [(msg_id, name, run_id, int(value)) for name, value in counts.items()],
                )

    def release(self, msg_id: str, token: int, state: str, error: str | None) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, error = ?, lease_until = NULL, updated_at = ? "
                    "WHERE id = ? AND token = ? AND state = ?"
                ),
                (state, _clip(error), self.now(), msg_id, token, M_CLAIMED),
            )
            if cur.rowcount != 1:
                raise Fenced(f"message {msg_id}: lease token {token} is no longer current")

    # the master's watch -----------------------------------------------------------

    def counts(self, run_id: str, phase: str | None = None) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM swarm_messages WHERE run_id = ?"
        args: list[Any] = [run_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        with self._tx() as cur:
            cur.execute(self._sql(sql + " GROUP BY state"), args)
            return {state: int(n) for state, n in cur.fetchall()}

    def chunk_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        with self._tx() as cur:
            cur.execute(
                self._sql("SELECT phase, state, COUNT(*) FROM swarm_messages WHERE run_id = ? GROUP BY phase, state"),
                (run_id,),
            )
            out: dict[str, dict[str, int]] = {}
            for phase, state, n in cur.fetchall():
                out.setdefault(phase, {})[state] = int(n)
            return out

    def reclaim_expired(self, run_id: str, now: float) -> list[Message]:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, body FROM swarm_messages "
                    "WHERE run_id = ? AND state = ? AND lease_until < ?"
                ),
                (run_id, M_CLAIMED, now),
            )
            expired = [_message(r) for r in cur.fetchall()]
            # token + 1 fences the stale holder out of committing.
            cur.executemany(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, token = token + 1, lease_until = NULL, "
                    "error = ?, updated_at = ? WHERE id = ? AND state = ? AND lease_until < ?"
                ),
                [(M_QUEUED, "lease expired", now, m.id, M_CLAIMED, now) for m in expired],
            )
        return expired

    def stale_queued(self, run_id: str, older_than: float) -> list[Message]:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, body FROM swarm_messages "
                    "WHERE run_id = ? AND state = ? AND updated_at < ?"
                ),
                (run_id, M_QUEUED, older_than),
            )
            stale = [_message(r) for r in cur.fetchall()]
            cur.executemany(
                self._sql("UPDATE swarm_messages SET updated_at = ? WHERE id = ? AND state = ?"),
                [(self.now(), m.id, M_QUEUED) for m in stale],
            )
        return stale

    def failures(self, run_id: str, limit: int = 100) -> list[Failure]:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, state, attempts, error, updated_at FROM swarm_messages "
                    "WHERE run_id = ? AND error IS NOT NULL ORDER BY updated_at DESC LIMIT ?"
                ),
                (run_id, int(limit)),
            )
            return [Failure(r[0], r[1], r[2], r[3], int(r[4]), r[5], float(r[6])) for r in cur.fetchall()]

    def counters(self, run_id: str) -> dict[str, int]:
        with self._tx() as cur:
            cur.execute(
                self._sql("SELECT name, SUM(value) FROM swarm_counters WHERE run_id = ? GROUP BY name"), (run_id,)
            )
            return {name: int(total) for name, total in cur.fetchall()}

    # dead letters ---------------------------------------------------------------

    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None) -> int:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO swarm_dead_letters (queue, message_id, reason, body, created_at) VALUES (?, ?, ?, ?, ?)"
                ),
                (queue, message_id, _clip(reason), bytes(body), self.now()),
            )
            return int(cur.lastrowid)

    def dead_letters(self, queue=None, replayed=False, limit=1000) -> list[DeadLetterRecord]:
        sql = "SELECT id, queue, message_id, reason, body, created_at, replayed_at FROM swarm_dead_letters WHERE 1 = 1"
        args: list[Any] = []
        if queue is not None:
            sql += " AND queue = ?"
            args.append(queue)
        if not replayed:
            sql += " AND replayed_at IS NULL"
        with self._tx() as cur:
            cur.execute(self._sql(sql + " ORDER BY id LIMIT ?"), (*args, int(limit)))
            return [_dead_letter(r) for r in cur.fetchall()]

    def get_dead_letter(self, dl_id: int) -> DeadLetterRecord | None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT id, queue, message_id, reason, body, created_at, replayed_at "
                    "FROM swarm_dead_letters WHERE id = ?"
                ),
                (int(dl_id),),
            )
            row = cur.fetchone()
        return None if row is None else _dead_letter(row)

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = self.now()
        with self._tx() as cur:
            cur.executemany(
                self._sql("UPDATE swarm_dead_letters SET replayed_at = ? WHERE id = ?"), [(now, int(i)) for i in ids]
            )

    def revive(self, msg_id: str) -> None:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, attempts = 0, token = token + 1, updated_at = ? "
                    "WHERE id = ? AND state = ?"
                ),
                (M_QUEUED, self.now(), msg_id, M_DEAD),
            )


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0], job=row[1], params=json.loads(row[2]), status=row[3], phase=row[4], error=row[5],
        created_at=float(row[6]), updated_at=float(row[7]),
        finished_at=None if row[8] is None else float(row[8]),
    )


def _message(row: Sequence[Any]) -> Message:
    return Message(id=row[0], stage=row[1], chunk=row[2], body=bytes(row[3]))


def _dead_letter(row: Sequence[Any]) -> DeadLetterRecord:
    return DeadLetterRecord(
        id=int(row[0]), queue=row[1], message_id=row[2], reason=row[3], body=bytes(row[4]),
        created_at=float(row[5]), replayed_at=None if row[6] is None else float(row[6]),
    )


def _clip(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_ERROR_CHARS:
        return text
    return text[: MAX_ERROR_CHARS // 2] + "\n... (cut) ...\n" + text[-MAX_ERROR_CHARS // 2:]


def _batches(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
