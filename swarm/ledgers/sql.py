"""The ledger in SQL, shared by the SQLite and MySQL implementations.

Statements are written with ``?`` placeholders and portable types; a
subclass supplies the connection, the transaction and the few spellings
that differ between databases.

Every write is safe to run twice: a dialect may repeat a transaction whose
COMMIT was sent but never acknowledged, so each write either is idempotent
or recognises that its own earlier run already landed.
"""
from __future__ import annotations

import abc
import contextlib
import json
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from swarm.errors import BackendError, Fenced
from swarm.ledger import (
    M_ABORTED, M_CLAIMED, M_DEAD, M_DONE, M_PLANNED, M_QUEUED, PLANNED, RUNNING,
    Claim, DeadLetterRecord, Failure, Ledger, Message, Run,
)

T = TypeVar("T")
Work = Callable[[Any], T]  # takes a DB-API cursor inside one transaction

MAX_ERROR_CHARS = 16_000

# {name} placeholders are filled by the dialect: key (indexed string),
# blob (message body), text (errors, params), real (timestamps), autoid,
# table_options (after a CREATE TABLE's closing parenthesis).
VERSION_TABLE = "CREATE TABLE IF NOT EXISTS swarm_schema (version INTEGER NOT NULL){table_options}"

V1_TABLES = (
    """CREATE TABLE IF NOT EXISTS swarm_runs (
        id {key} PRIMARY KEY, job {key} NOT NULL, params {text} NOT NULL,
        status VARCHAR(16) NOT NULL, phase {key}, error {text},
        created_at {real} NOT NULL, updated_at {real} NOT NULL, finished_at {real}){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_phases (
        run_id {key} NOT NULL, phase {key} NOT NULL, state VARCHAR(16) NOT NULL,
        updated_at {real} NOT NULL, PRIMARY KEY (run_id, phase)){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_messages (
        id {key} PRIMARY KEY, run_id {key} NOT NULL, phase {key} NOT NULL,
        stage {key} NOT NULL, chunk {key} NOT NULL, state VARCHAR(16) NOT NULL,
        token BIGINT NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
        holder {key}, lease_until {real}, error {text}, body {blob} NOT NULL,
        updated_at {real} NOT NULL){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_counters (
        message_id {key} NOT NULL, name {key} NOT NULL, run_id {key} NOT NULL,
        value BIGINT NOT NULL, PRIMARY KEY (message_id, name)){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_dead_letters (
        id {autoid}, queue {key} NOT NULL, message_id {key}, reason {text} NOT NULL,
        body {blob} NOT NULL, created_at {real} NOT NULL, replayed_at {real}){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_locks (
        name {key} PRIMARY KEY, holder {key} NOT NULL, expires_at {real} NOT NULL){table_options}""",
)
V1_INDEXES = (
    ("swarm_messages_run_state", "swarm_messages", "run_id, state, phase"),
    ("swarm_counters_run", "swarm_counters", "run_id"),
)


def _v1(ledger: SqlLedger, cur: Any) -> None:
    """Runs, phases, messages, counters, dead letters and the master's lock."""
    for statement in V1_TABLES:
        cur.execute(ledger._ddl(statement))
    for name, table, columns in V1_INDEXES:
        ledger._create_index(cur, name, table, columns)


# Step n takes the schema from version n - 1 to n. Append steps; never edit
# one that has shipped. MySQL commits each DDL statement on its own, so a
# step must be safe to run again after failing part-way (IF NOT EXISTS...).
MIGRATIONS: tuple[Callable[[SqlLedger, Any], None], ...] = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)

_RUN_COLUMNS = "id, job, params, status, phase, error, created_at, updated_at, finished_at"
_MESSAGE_COLUMNS = "id, run_id, phase, stage, chunk, state, body, updated_at"


class SqlLedger(Ledger, abc.ABC):
    """Everything but the connection and the dialect."""

    types: Mapping[str, str] = {}

    @abc.abstractmethod
    def _transaction(self, work: Work[T]) -> T:
        """Run ``work(cursor)`` in one transaction: committed when it returns, rolled back when it raises.

        A dialect may run ``work`` again after a transient failure, so ``work``
        must be safe to repeat, also after an earlier run that committed.
        """

    def _sql(self, statement: str) -> str:
        """Adapt a ``?``-placeholder statement to the driver."""
        return statement

    def _ddl(self, statement: str) -> str:
        return statement.format(**self.types)

    def _insert_new(self, table: str, columns: str) -> str:
        """An INSERT that skips a row whose primary key exists and fails on anything else."""
        marks = ", ".join("?" for _ in columns.split(","))
        return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"

    def _create_index(self, cur: Any, name: str, table: str, columns: str) -> None:
        cur.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")

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

    # schema -----------------------------------------------------------------

    def init_schema(self) -> None:
        self.migrate()

    def migrate(self) -> list[int]:
        """Apply the numbered steps the database has not had yet, in order; returns their numbers."""
        applied = []
        with self._schema_lock():
            self._transaction(lambda cur: cur.execute(self._ddl(VERSION_TABLE)))
            self._refuse_newer()
            for version, step in enumerate(MIGRATIONS, start=1):
                if self._transaction(lambda cur: self._step(cur, version, step)):
                    applied.append(version)
        return applied

    def _refuse_newer(self) -> None:
        current = self.schema_version() or 0
        if current > len(MIGRATIONS):
            raise BackendError(
                f"the ledger's schema is at version {current}, newer than this Swarm knows "
                f"({len(MIGRATIONS)}): upgrade Swarm before using this database"
            )

    def _step(self, cur: Any, version: int, step: Callable[[SqlLedger, Any], None]) -> bool:
        cur.execute("SELECT version FROM swarm_schema")
        row = cur.fetchone()
        if row is not None and int(row[0]) >= version:
            return False
        step(self, cur)
        if row is None:
            cur.execute(self._sql("INSERT INTO swarm_schema (version) VALUES (?)"), (version,))
        else:
            cur.execute(self._sql("UPDATE swarm_schema SET version = ?"), (version,))
        return True

    def schema_version(self) -> int | None:
        row = self._row("SELECT version FROM swarm_schema")
        return None if row is None else int(row[0])

    # runs -------------------------------------------------------------------

    def open_run(self, run_id: str, job: str, params: Mapping[str, Any]) -> Run:
        now = self.now()
        row = (run_id, job, json.dumps(dict(params), sort_keys=True), RUNNING, None, None, now, now, None)
        self._write(self._insert_new("swarm_runs", _RUN_COLUMNS), row)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        row = self._row(f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,))
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
            where.append("error LIKE ? ESCAPE '!'")
            args.append(f"%{_like_literal(text)}%")
        sql = f"SELECT {_RUN_COLUMNS} FROM swarm_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        return [_run(r) for r in self._rows(sql, (*args, int(limit)))]

    def update_run(self, run_id, *, status=None, phase=None, error=None, finished=False) -> None:
        now = self.now()
        sets, args = ["updated_at = ?"], [now]
        for column, value in (("status", status), ("phase", phase), ("error", _clip(error))):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        if status == RUNNING:
            sets.append("error = NULL")
            sets.append("finished_at = NULL")
        if finished:
            sets.append("finished_at = ?")
            args.append(now)
        self._write(f"UPDATE swarm_runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    def phase_state(self, run_id: str, phase: str) -> str | None:
        row = self._row("SELECT state FROM swarm_phases WHERE run_id = ? AND phase = ?", (run_id, phase))
        return None if row is None else row[0]

    def set_phase_state(self, run_id: str, phase: str, state: str) -> None:
        now = self.now()
        self._transaction(lambda cur: self._set_phase(cur, run_id, phase, state, now))

    def _set_phase(self, cur: Any, run_id: str, phase: str, state: str, now: float) -> None:
        cur.execute(
            self._sql("UPDATE swarm_phases SET state = ?, updated_at = ? WHERE run_id = ? AND phase = ?"),
            (state, now, run_id, phase),
        )
        cur.execute(
            self._sql(self._insert_new("swarm_phases", "run_id, phase, state, updated_at")),
            (run_id, phase, state, now),
        )

    # plan -------------------------------------------------------------------

    def save_plan(self, run_id: str, phase: str, messages: Sequence[Message]) -> None:
        now = self.now()
        rows = [(m.id, run_id, phase, m.stage, m.chunk, M_PLANNED, m.body, now) for m in messages]

        def work(cur: Any) -> None:
            for batch in _batches(rows, 1000):
                cur.executemany(self._sql(self._insert_new("swarm_messages", _MESSAGE_COLUMNS)), batch)
            self._set_phase(cur, run_id, phase, PLANNED, now)

        self._transaction(work)

    def planned(self, run_id: str, phase: str, limit: int) -> list[Message]:
        rows = self._rows(
            "SELECT id, stage, chunk, body FROM swarm_messages "
            "WHERE run_id = ? AND state = ? AND phase = ? ORDER BY id LIMIT ?",
            (run_id, M_PLANNED, phase, int(limit)),
        )
        return [_message(r) for r in rows]

    def mark_queued(self, ids: Sequence[str]) -> None:
        now = self.now()
        # Sorted, as every multi-row write here is, so that transactions take row locks in one order.
        self._write_many(
            "UPDATE swarm_messages SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
            [(M_QUEUED, now, i, M_PLANNED) for i in sorted(ids)],
        )

    # workers ----------------------------------------------------------------

    def claim(self, run_id: str, phase: str, msg: Message, holder: str, lease: float) -> Claim:
        now = self.now()
        until = now + lease

        def work(cur: Any) -> Claim:
            cur.execute(
                self._sql(self._insert_new("swarm_messages", _MESSAGE_COLUMNS)),
                (msg.id, run_id, phase, msg.stage, msg.chunk, M_QUEUED, msg.body, now),
            )
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, token = token + 1, attempts = attempts + 1, "
                    "holder = ?, lease_until = ?, updated_at = ? "
                    "WHERE id = ? AND (state IN (?, ?) OR (state = ? AND lease_until < ?))"
                ),
                (M_CLAIMED, holder, until, now, msg.id, M_PLANNED, M_QUEUED, M_CLAIMED, now),
            )
            granted = cur.rowcount == 1
            # "ours": this very call's grant, already committed by an earlier run
            # of this transaction whose COMMIT went unacknowledged.
            cur.execute(
                self._sql(
                    "SELECT state, token, attempts, CASE WHEN holder = ? AND lease_until = ? THEN 1 ELSE 0 END "
                    "FROM swarm_messages WHERE id = ?"
                ),
                (holder, until, msg.id),
            )
            state, token, attempts, ours = cur.fetchone()
            if granted or (state == M_CLAIMED and int(ours)):
                return Claim(token=int(token), attempts=int(attempts))
            return Claim(token=None, attempts=int(attempts), state=state)

        return self._transaction(work)

    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> None:
        until = self.now() + lease
        self._write_many(
            "UPDATE swarm_messages SET lease_until = ? WHERE id = ? AND token = ? AND state = ?",
            [(until, msg_id, token, M_CLAIMED) for msg_id, token in sorted(leases)],
        )

    def complete(self, msg_id, token, run_id, phase, children, counts) -> None:
        now = self.now()
        child_rows = [(c.id, run_id, phase, c.stage, c.chunk, M_QUEUED, c.body, now) for c in children]
        count_rows = [(msg_id, name, run_id, int(value)) for name, value in counts.items()]

        def work(cur: Any) -> None:
            if not self._end_lease(cur, msg_id, token, M_DONE, None, now):
                return  # an earlier run of this very call committed it all
            if child_rows:
                cur.executemany(self._sql(self._insert_new("swarm_messages", _MESSAGE_COLUMNS)), child_rows)
            if count_rows:
                cur.executemany(
                    self._sql(self._insert_new("swarm_counters", "message_id, name, run_id, value")), count_rows
                )

        self._transaction(work)

    def release(self, msg_id: str, token: int, state: str, error: str | None) -> None:
        if state not in (M_QUEUED, M_DEAD, M_ABORTED):
            raise ValueError(f"release to {state!r}: expected one of {M_QUEUED}, {M_DEAD}, {M_ABORTED}")
        now = self.now()
        self._transaction(lambda cur: self._end_lease(cur, msg_id, token, state, _clip(error), now))

    def _end_lease(self, cur: Any, msg_id: str, token: int, state: str, error: str | None, now: float) -> bool:
        """Move the message held with ``token`` to ``state``; False if this was done already; ``Fenced`` if stale."""
        error_sql = "" if state == M_DONE else "error = ?, "
        cur.execute(
            self._sql(
                f"UPDATE swarm_messages SET state = ?, {error_sql}lease_until = NULL, updated_at = ? "
                "WHERE id = ? AND token = ? AND state = ?"
            ),
            (state, *([] if state == M_DONE else [error]), now, msg_id, token, M_CLAIMED),
        )
        if cur.rowcount == 1:
            return True
        # Nothing changes the token of a message after it leaves ``claimed`` with
        # it, so (state, token) says whether it was this holder who ended it.
        cur.execute(self._sql("SELECT state, token FROM swarm_messages WHERE id = ?"), (msg_id,))
        row = cur.fetchone()
        if row is not None and row[0] == state and int(row[1]) == token:
            return False
        raise Fenced(f"message {msg_id}: lease token {token} is no longer current")

    def reject(self, msg_id: str, reason: str) -> bool:
        now = self.now()

        def work(cur: Any) -> bool:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, error = ?, token = token + 1, lease_until = NULL, "
                    "updated_at = ? WHERE id = ? AND state IN (?, ?)"
                ),
                (M_DEAD, _clip(reason), now, msg_id, M_PLANNED, M_QUEUED),
            )
            return cur.rowcount == 1

        return self._transaction(work)

    # the master's watch -----------------------------------------------------------

    def counts(self, run_id: str, phase: str | None = None) -> dict[str, int]:
        sql = "SELECT state, COUNT(*) FROM swarm_messages WHERE run_id = ?"
        args: list[Any] = [run_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        return {state: int(n) for state, n in self._rows(sql + " GROUP BY state", args)}

    def chunk_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        rows = self._rows(
            "SELECT phase, state, COUNT(*) FROM swarm_messages WHERE run_id = ? GROUP BY phase, state", (run_id,)
        )
        out: dict[str, dict[str, int]] = {}
        for phase, state, n in rows:
            out.setdefault(phase, {})[state] = int(n)
        return out

    def done_since(self, run_id: str, since: float) -> dict[str, int]:
        rows = self._rows(
            "SELECT stage, COUNT(*) FROM swarm_messages WHERE run_id = ? AND state = ? AND updated_at >= ? "
            "GROUP BY stage",
            (run_id, M_DONE, since),
        )
        return {stage: int(n) for stage, n in rows}

    def reclaim_expired(self, run_id: str, now: float) -> list[Message]:
        # Kept across runs of the transaction: after a COMMIT that landed
        # unacknowledged the rows are queued already, yet must be re-published.
        found: dict[str, Message] = {}

        def work(cur: Any) -> None:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, body FROM swarm_messages "
                    "WHERE run_id = ? AND state = ? AND lease_until < ? ORDER BY id"
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
            found.update((m.id, m) for m in expired)

        self._transaction(work)
        return list(found.values())

    def stale_queued(self, run_id: str, older_than: float) -> list[Message]:
        now = self.now()
        found: dict[str, Message] = {}  # kept across runs, as in reclaim_expired

        def work(cur: Any) -> None:
            cur.execute(
                self._sql(
                    "SELECT id, stage, chunk, body FROM swarm_messages "
                    "WHERE run_id = ? AND state = ? AND updated_at < ? ORDER BY id"
                ),
                (run_id, M_QUEUED, older_than),
            )
            stale = [_message(r) for r in cur.fetchall()]
            cur.executemany(
                self._sql("UPDATE swarm_messages SET updated_at = ? WHERE id = ? AND state = ?"),
                [(now, m.id, M_QUEUED) for m in stale],
            )
            found.update((m.id, m) for m in stale)

        self._transaction(work)
        return list(found.values())

    def failures(self, run_id: str, limit: int = 100) -> list[Failure]:
        rows = self._rows(
            "SELECT id, stage, chunk, state, attempts, error, updated_at FROM swarm_messages "
            "WHERE run_id = ? AND (state IN (?, ?) OR error IS NOT NULL) ORDER BY updated_at DESC, id LIMIT ?",
            (run_id, M_DEAD, M_ABORTED, int(limit)),
        )
        return [Failure(r[0], r[1], r[2], r[3], int(r[4]), r[5], float(r[6])) for r in rows]

    def counters(self, run_id: str) -> dict[str, int]:
        rows = self._rows("SELECT name, SUM(value) FROM swarm_counters WHERE run_id = ? GROUP BY name", (run_id,))
        return {name: int(total) for name, total in rows}

    # dead letters ---------------------------------------------------------------

    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None) -> int:
        row = (queue, message_id, _clip(reason), bytes(body), self.now())
        ran = False

        def work(cur: Any) -> int:
            nonlocal ran
            if ran:  # an earlier run may have committed: find its row rather than add a second
                cur.execute(
                    self._sql(
                        "SELECT id FROM swarm_dead_letters WHERE queue = ? AND created_at = ? AND reason = ? "
                        "AND body = ? ORDER BY id DESC"
                    ),
                    (queue, row[4], row[2], row[3]),
                )
                found = cur.fetchone()
                if found is not None:
                    return int(found[0])
            ran = True
            cur.execute(
                self._sql(
                    "INSERT INTO swarm_dead_letters (queue, message_id, reason, body, created_at) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                row,
            )
            return int(cur.lastrowid)

        return self._transaction(work)

    def dead_letters(self, queue=None, replayed=False, limit=1000) -> list[DeadLetterRecord]:
        sql = "SELECT id, queue, message_id, reason, body, created_at, replayed_at FROM swarm_dead_letters WHERE 1 = 1"
        args: list[Any] = []
        if queue is not None:
            sql += " AND queue = ?"
            args.append(queue)
        if not replayed:
            sql += " AND replayed_at IS NULL"
        return [_dead_letter(r) for r in self._rows(sql + " ORDER BY id LIMIT ?", (*args, int(limit)))]

    def get_dead_letter(self, dl_id: int) -> DeadLetterRecord | None:
        row = self._row(
            "SELECT id, queue, message_id, reason, body, created_at, replayed_at FROM swarm_dead_letters WHERE id = ?",
            (int(dl_id),),
        )
        return None if row is None else _dead_letter(row)

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = self.now()
        self._write_many(
            "UPDATE swarm_dead_letters SET replayed_at = ? WHERE id = ?", [(now, int(i)) for i in sorted(set(ids))]
        )

    def revive(self, msg_id: str) -> None:
        self._write(
            "UPDATE swarm_messages SET state = ?, attempts = 0, token = token + 1, updated_at = ? "
            "WHERE id = ? AND state = ?",
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


def _like_literal(text: str) -> str:
    """``text`` matched as itself inside a LIKE pattern whose escape character is ``!``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _batches(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
