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
import dataclasses
import hashlib
import json
import threading
from typing import Any, Callable, Generic, Hashable, Iterable, Iterator, Mapping, Sequence, TypeVar

from swarm.errors import BackendError, Fenced, clip
from swarm.limits import MAX_DEAD_LETTER_BYTES, MAX_ERROR_CHARS
from swarm.ledger import (
    Claim, ClaimRequest, Completion, DeadLetterRecord, Failure, Ledger, Message, MessageState, PhaseState, Pruned,
    Refusal, Run, RunStatus, body_digest,
)

T = TypeVar("T")
R = TypeVar("R")  # a request in a group commit
Work = Callable[[Any], T]  # takes a DB-API cursor inside one transaction

PRUNE_BATCH = 5000  # rows deleted per transaction: pruning never holds long locks

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


V2_COLUMNS = (
    ("swarm_messages", "digest", "VARCHAR(64)"),
    ("swarm_messages", "parent", "{key}"),
    ("swarm_dead_letters", "size", "BIGINT"),
    ("swarm_dead_letters", "sha256", "VARCHAR(64)"),
)


def _v2(ledger: SqlLedger, cur: Any) -> None:
    """Only planned work runs: each message's body digest and parent; dead letters' full size and digest.

    Rows from before have no digest; a claim of one goes by its id alone.
    """
    for table, column, kind in V2_COLUMNS:
        ledger._add_column(cur, table, column, ledger._ddl(kind))


# Step n takes the schema from version n - 1 to n. Append steps; never edit
# one that has shipped. MySQL commits each DDL statement on its own, so a
# step must be safe to run again after failing part-way (IF NOT EXISTS...).
MIGRATIONS: tuple[Callable[[SqlLedger, Any], None], ...] = (_v1, _v2)
SCHEMA_VERSION = len(MIGRATIONS)


class SplitGroup(Exception):
    """A grouped transaction failed in a way that one member alone may have caused."""


@dataclasses.dataclass(eq=False)
class Pending(Generic[R]):
    """One caller's request in a group commit, and then its outcome."""

    key: Hashable  # only requests with equal keys share a transaction
    id: str  # and never two for the same message
    request: R
    result: Any = None
    error: BaseException | None = None
    settled: bool = False

    def succeed(self, result: Any) -> None:
        self.result, self.settled = result, True

    def fail(self, error: BaseException) -> None:
        self.error, self.settled = error, True

    def resolve(self, outcome: Any) -> None:
        """Settle with ``outcome``: an exception is this member's error, anything else its result."""
        if isinstance(outcome, BaseException):
            self.fail(outcome)
        else:
            self.succeed(outcome)

    def settle(self, action: Callable[[], Any]) -> None:
        """Settle with the outcome ``action()`` returns, or the exception it raises."""
        try:
            outcome = action()
        except Exception as exc:  # noqa: BLE001 - it is this member's outcome, raised in its own thread
            self.fail(exc)
        else:
            self.resolve(outcome)

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Group(Generic[R]):
    """Group commit: callers that arrive while a transaction runs share the next one.

    No thread of its own and no waiting for company: a caller that finds no
    transaction running leads one for every waiting request that fits (its
    own included, in arrival order), so a lone caller goes straight through.
    ``run`` settles every member of the group it is given.

    ``shared=False``: a caller's requests share transactions only with each
    other, in its own thread, whatever other threads do.
    """

    def __init__(self, run: Callable[[list[Pending[R]]], None], limit: int = 64, shared: bool = True):
        self._run, self._limit, self._shared = run, limit, shared
        self._cond = threading.Condition()
        self._waiting: list[Pending[R]] = []
        self._busy = False

    def submit(self, key: Hashable, id_: str, request: R) -> Any:
        """Wait for this request's outcome: its result, or its exception raised here."""
        return self.submit_many(key, [(id_, request)])[0].outcome()

    def submit_many(self, key: Hashable, requests: Sequence[tuple[str, R]]) -> list[Pending[R]]:
        """Queue several ``(id, request)`` at once and wait until every one is settled."""
        mine = [Pending(key, id_, request) for id_, request in requests]
        if self._shared:
            self._share(mine)
        else:
            waiting = mine
            while waiting:
                group, waiting = _take(waiting, self._limit)
                self._run(group)
        return mine

    def _share(self, mine: list[Pending[R]]) -> None:
        with self._cond:
            self._waiting.extend(mine)
        while True:
            with self._cond:
                while self._busy and not all(p.settled for p in mine):
                    self._cond.wait()
                if all(p.settled for p in mine):
                    return
                self._busy = True
                group = self._take()
            self._lead(group)

    def _take(self) -> list[Pending[R]]:
        group, self._waiting = _take(self._waiting, self._limit)
        return group

    def _lead(self, group: list[Pending[R]]) -> None:
        try:
            self._run(group)
        finally:
            for p in group:
                if not p.settled:  # the leader was interrupted
                    p.fail(BackendError("the ledger transaction was interrupted"))
            with self._cond:
                self._busy = False
                self._cond.notify_all()


def _take(waiting: list[Pending[R]], limit: int) -> tuple[list[Pending[R]], list[Pending[R]]]:
    """The oldest request and those after it that can share its transaction; and the rest, still waiting."""
    first, group, rest, ids = waiting[0], [], [], set()
    for p in waiting:
        if len(group) < limit and p.key == first.key and p.id not in ids:
            group.append(p)
            ids.add(p.id)
        else:
            rest.append(p)  # a second request for a message waits for the first one's outcome
    return group, rest


_RUN_COLUMNS = "id, job, params, status, phase, error, created_at, updated_at, finished_at"
_MESSAGE_COLUMNS = "id, run_id, phase, stage, chunk, state, body, updated_at, digest, parent"
_DEAD_LETTER_COLUMNS = "id, queue, message_id, reason, body, created_at, replayed_at, size, sha256"


class SqlLedger(Ledger, abc.ABC):
    """Everything but the connection and the dialect."""

    types: Mapping[str, str] = {}
    # A batch's claims share one transaction, as do its completes; a single
    # call is a batch of one. With group commit, so do those of concurrent
    # callers: fewer commits, each waiting for its log flush.
    group_commit = False
    group_limit = 64
    lock_rows = ""  # what makes a SELECT lock the rows it reads, where a transaction needs it

    def __init__(self) -> None:
        self._claims = Group(self._claim_group, self.group_limit, shared=self.group_commit)
        self._completes = Group(self._complete_group, self.group_limit, shared=self.group_commit)

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

    def _insert_new(self, table: str, columns: str) -> str:
        """An INSERT that skips a row whose primary key exists and fails on anything else."""
        marks = ", ".join("?" for _ in columns.split(","))
        return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"

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
        row = (run_id, job, json.dumps(dict(params), sort_keys=True), RunStatus.RUNNING, None, None, now, now, None)
        self._write(self._insert_new("swarm_runs", _RUN_COLUMNS), row)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        row = self._row(f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,))
        return None if row is None else _run(row)

    def jobs(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT job FROM swarm_runs ORDER BY job")]

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
        if status == RunStatus.RUNNING:
            sets.append("error = NULL")
            sets.append("finished_at = NULL")
        if finished:
            sets.append("finished_at = ?")
            args.append(now)
        self._write(f"UPDATE swarm_runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    def phase_state(self, run_id: str, phase: str) -> PhaseState | None:
        row = self._row("SELECT state FROM swarm_phases WHERE run_id = ? AND phase = ?", (run_id, phase))
        return None if row is None else PhaseState(row[0])

    def set_phase_state(self, run_id: str, phase: str, state: PhaseState) -> None:
        now = self.now()
        self._transaction(lambda cur: self._set_phase(cur, run_id, phase, state, now))

    def _set_phase(self, cur: Any, run_id: str, phase: str, state: PhaseState, now: float) -> None:
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
        rows = [_message_row(m, run_id, phase, MessageState.PLANNED, now) for m in messages]

        def work(cur: Any) -> None:
            for batch in _batches(rows, 1000):
                cur.executemany(self._sql(self._insert_new("swarm_messages", _MESSAGE_COLUMNS)), batch)
            self._set_phase(cur, run_id, phase, PhaseState.PLANNED, now)

        self._transaction(work)

    def planned(self, run_id: str, phase: str, limit: int, after: str = "") -> list[Message]:
        # Starting after the last id published lets the database walk the index
        # from there instead of sorting every planned row for each batch.
        rows = self._rows(
            "SELECT id, stage, chunk, body FROM swarm_messages "
            "WHERE run_id = ? AND state = ? AND phase = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, MessageState.PLANNED, phase, after, int(limit)),
        )
        return [_message(r) for r in rows]

    def mark_queued(self, ids: Sequence[str]) -> None:
        now = self.now()
        # Sorted, as every multi-row write here is, so that transactions take row locks in one order.
        ordered = sorted(set(ids))

        def work(cur: Any) -> None:
            for part in _batches(ordered, 1000):
                cur.execute(
                    self._sql(
                        f"UPDATE swarm_messages SET state = ?, updated_at = ? WHERE state = ? AND id IN ({_marks(part)})"
                    ),
                    (MessageState.QUEUED, now, MessageState.PLANNED, *part),
                )

        if ordered:
            self._transaction(work)

    # workers ----------------------------------------------------------------

    def claim_batch(self, requests: Sequence[ClaimRequest], holder: str, lease: float) -> list[Claim | BackendError]:
        settled = self._claims.submit_many((holder, lease), [(r.message.id, r) for r in requests])
        return [p.error or p.result for p in settled]

    def _claim_group(self, group: list[Pending[ClaimRequest]]) -> None:
        holder, lease = group[0].key
        now = self.now()
        until = now + lease  # the same in every run of the transaction: a claim knows its own lease by it
        self._run_group(group, lambda cur, requests: self._claim_many(cur, requests, holder, now, until))

    def _claim_many(self, cur: Any, requests: list[ClaimRequest], holder: str, now: float, until: float) -> list[Claim]:
        """Claim distinct messages, each with the outcome it would get alone; nothing unknown is recorded.

        A claim never inserts: a message runs only if the master planned it
        or a parent recorded it, with this very body (its digest), in a run
        that is running. A refused claim changes nothing.
        """
        ids = sorted(r.message.id for r in requests)
        cur.execute(
            self._sql(
                "SELECT m.id, m.state, m.attempts, m.lease_until, m.digest, r.status, "
                "CASE WHEN m.holder = ? AND m.lease_until = ? THEN 1 ELSE 0 END "
                f"FROM swarm_messages m LEFT JOIN swarm_runs r ON r.id = m.run_id WHERE m.id IN ({_marks(ids)})"
            ),
            (holder, until, *ids),
        )
        found = {row[0]: row[1:] for row in cur.fetchall()}
        refused: dict[str, Claim] = {}
        wanted = []
        for r in requests:
            verdict = _may_claim(found.get(r.message.id), r.message.body, now)
            if verdict is None:
                wanted.append(r.message.id)
            else:
                refused[r.message.id] = verdict
        granted = self._take_leases(cur, wanted, holder, now, until)
        return [refused.get(r.message.id) or granted[r.message.id] for r in requests]

    def _take_leases(self, cur: Any, ids: list[str], holder: str, now: float, until: float) -> dict[str, Claim]:
        """Lease the claimable ``ids``; each one's claim, granted unless a concurrent claim came first."""
        if not ids:
            return {}
        cur.execute(
            self._sql(
                "UPDATE swarm_messages SET state = ?, token = token + 1, attempts = attempts + 1, "
                f"holder = ?, lease_until = ?, updated_at = ? WHERE id IN ({_marks(ids)}) "
                "AND (state IN (?, ?) OR (state = ? AND lease_until < ?))"
            ),
            (MessageState.CLAIMED, holder, until, now, *ids,
             MessageState.PLANNED, MessageState.QUEUED, MessageState.CLAIMED, now),
        )
        # Granted: claimed with this very holder and lease end, by the UPDATE above
        # or by an earlier run of this transaction whose COMMIT went unacknowledged.
        cur.execute(
            self._sql(
                "SELECT id, state, token, attempts, CASE WHEN holder = ? AND lease_until = ? THEN 1 ELSE 0 END "
                f"FROM swarm_messages WHERE id IN ({_marks(ids)})"
            ),
            (holder, until, *ids),
        )
        return {row[0]: _claim(*row[1:]) for row in cur.fetchall()}

    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> None:
        until = self.now() + lease
        held = sorted(set(leases))

        def work(cur: Any) -> None:
            for part in _batches(held, 500):
                ids = [msg_id for msg_id, _ in part]
                cur.execute(
                    self._sql(
                        f"UPDATE swarm_messages SET lease_until = ? WHERE state = ? AND id IN ({_marks(ids)}) "
                        f"AND ({_id_token_pairs(len(part))})"
                    ),
                    (until, MessageState.CLAIMED, *ids, *(v for pair in part for v in pair)),
                )

        if held:
            self._transaction(work)

    def complete_batch(self, completions: Sequence[Completion]) -> list[Fenced | BackendError | None]:
        return [p.error for p in self._completes.submit_many(None, [(c.message_id, c) for c in completions])]

    def _complete_group(self, group: list[Pending[Completion]]) -> None:
        now = self.now()
        self._run_group(group, lambda cur, completions: self._complete_many(cur, completions, now))

    def _complete_many(self, cur: Any, completions: list[Completion], now: float) -> list[Fenced | None]:
        """Complete distinct messages: ``Fenced`` for a stale token, else None; a repeated complete changes nothing."""
        ids = sorted(c.message_id for c in completions)
        cur.execute(
            self._sql(f"SELECT id, state, token FROM swarm_messages WHERE id IN ({_marks(ids)}){self.lock_rows}"),
            ids,
        )
        found = {row[0]: (row[1], int(row[2])) for row in cur.fetchall()}
        outcomes: list[Fenced | None] = []
        ending = []
        for c in completions:
            state, current = found.get(c.message_id, (None, None))
            if current != c.token or state not in (MessageState.CLAIMED, MessageState.DONE):
                outcomes.append(Fenced(f"message {c.message_id}: lease token {c.token} is no longer current"))
            else:
                outcomes.append(None)
                # Else done with this token: an earlier run of this very call committed it all.
                if state == MessageState.CLAIMED:
                    ending.append(c)
        if ending:
            self._end_leases(cur, sorted(ending, key=lambda c: c.message_id), now)
        return outcomes

    def _end_leases(self, cur: Any, completions: list[Completion], now: float) -> None:
        """Mark done the claimed messages of ``completions``, locked and checked already, and record their results."""
        ids = [c.message_id for c in completions]
        cur.execute(
            self._sql(
                f"UPDATE swarm_messages SET state = ?, lease_until = NULL, updated_at = ? WHERE id IN ({_marks(ids)}) "
                f"AND state = ? AND ({_id_token_pairs(len(completions))})"
            ),
            (MessageState.DONE, now, *ids, MessageState.CLAIMED,
             *(v for c in completions for v in (c.message_id, c.token))),
        )
        if cur.rowcount != len(completions):
            raise BackendError(
                f"{len(completions)} leases to end, {cur.rowcount} found: the rows changed under their locks")
        children: dict[str, tuple] = {}
        for c in completions:
            for kid in c.children:
                children.setdefault(kid.id, _message_row(kid, c.run_id, c.phase, MessageState.QUEUED, now,
                                                         parent=c.message_id))
        counts = [(c.message_id, name, c.run_id, int(value)) for c in completions
                  for name, value in sorted(c.counts.items())]
        self._record_results(cur, [children[i] for i in sorted(children)], counts)

    def _record_results(self, cur: Any, child_rows: list[tuple], count_rows: list[tuple]) -> None:
        if child_rows:
            cur.executemany(self._sql(self._insert_new("swarm_messages", _MESSAGE_COLUMNS)), child_rows)
        if count_rows:
            cur.executemany(
                self._sql(self._insert_new("swarm_counters", "message_id, name, run_id, value")), count_rows
            )

    def _run_group(self, group: list[Pending[R]], work: Callable[[Any, list[R]], list]) -> None:
        """Settle every member with ``work``'s outcome for it: together, or alone if it may spoil the group.

        ``work(cur, requests)`` returns one outcome per request, an exception
        where that request failed; a lone request is a group of one.
        """
        if len(group) == 1 or not self._run_together(group, work):
            for p in group:
                p.settle(lambda p=p: self._transaction(lambda cur: work(cur, [p.request]))[0])

    def _run_together(self, group: list[Pending[R]], work: Callable[[Any, list[R]], list]) -> bool:
        """Settle every member from one transaction; False, settling none, if a member may have caused its failure."""
        try:
            outcomes = self._group_transaction(lambda cur: work(cur, [p.request for p in group]))
        except SplitGroup:
            return False
        except BackendError as exc:  # e.g. the database is down: each call fails as it would alone
            outcomes = [BackendError(str(exc)) for _ in group]
        for p, outcome in zip(group, outcomes):
            p.resolve(outcome)
        return True

    def release(self, msg_id: str, token: int, state: MessageState, error: str | None, refund: bool = False) -> None:
        if state not in (MessageState.QUEUED, MessageState.DEAD, MessageState.ABORTED):
            raise ValueError(f"release to {state!r}: expected one of "
                             f"{MessageState.QUEUED}, {MessageState.DEAD}, {MessageState.ABORTED}")
        if refund and state != MessageState.QUEUED:
            raise ValueError("only a message going back to the queue gets its attempt back")
        now = self.now()
        self._transaction(lambda cur: self._end_lease(cur, msg_id, token, state, _clip(error), now, refund))

    def _end_lease(self, cur: Any, msg_id: str, token: int, state: MessageState, error: str | None, now: float,
                   refund: bool) -> None:
        """Move the message held with ``token`` to ``state``, unless this was done already; ``Fenced`` if stale."""
        refund_sql = "attempts = attempts - 1, " if refund else ""
        cur.execute(
            self._sql(
                f"UPDATE swarm_messages SET state = ?, error = ?, {refund_sql}lease_until = NULL, updated_at = ? "
                "WHERE id = ? AND token = ? AND state = ?"
            ),
            (state, error, now, msg_id, token, MessageState.CLAIMED),
        )
        if cur.rowcount == 1:
            return
        # Nothing changes the token of a message after it leaves ``claimed`` with
        # it, so (state, token) says whether it was this holder who ended it.
        cur.execute(self._sql("SELECT state, token FROM swarm_messages WHERE id = ?"), (msg_id,))
        row = cur.fetchone()
        if row is None or row[0] != state or int(row[1]) != token:
            raise Fenced(f"message {msg_id}: lease token {token} is no longer current")

    def reject(self, msg_id: str, body: bytes, reason: str) -> bool:
        now = self.now()

        def work(cur: Any) -> bool:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, error = ?, token = token + 1, lease_until = NULL, "
                    "updated_at = ? WHERE id = ? AND state IN (?, ?) AND (digest = ? OR digest IS NULL)"
                ),
                (MessageState.DEAD, _clip(reason), now, msg_id, MessageState.PLANNED, MessageState.QUEUED,
                 body_digest(bytes(body))),
            )
            return cur.rowcount == 1

        return self._transaction(work)

    def queued_children(self, parent_id: str) -> list[Message]:
        # A child shares its parent's run, phase and chunk, so it sorts under the
        # same id prefix: a range of the primary key, and no index on parent to
        # keep up on every child's insert (names cannot hold "/", so the range
        # "prefix/" .. "prefix0" holds exactly the ids that start with "prefix/").
        prefix = parent_id.rsplit("/", 2)[0]
        rows = self._rows(
            "SELECT id, stage, chunk, body FROM swarm_messages "
            "WHERE id > ? AND id < ? AND parent = ? AND state = ? ORDER BY id",
            (prefix + "/", prefix + "0", parent_id, MessageState.QUEUED),
        )
        return [_message(r) for r in rows]

    # the master's watch -----------------------------------------------------------

    def counts(self, run_id: str, phase: str | None = None) -> dict[MessageState, int]:
        sql = "SELECT state, COUNT(*) FROM swarm_messages WHERE run_id = ?"
        args: list[Any] = [run_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        return {MessageState(state): int(n) for state, n in self._rows(sql + " GROUP BY state", args)}

    def chunk_counts(self, run_id: str) -> dict[str, dict[MessageState, int]]:
        rows = self._rows(
            "SELECT phase, state, COUNT(*) FROM swarm_messages WHERE run_id = ? GROUP BY phase, state", (run_id,)
        )
        out: dict[str, dict[MessageState, int]] = {}
        for phase, state, n in rows:
            out.setdefault(phase, {})[MessageState(state)] = int(n)
        return out

    def done_since(self, run_id: str, since: float) -> dict[str, int]:
        rows = self._rows(
            "SELECT stage, COUNT(*) FROM swarm_messages WHERE run_id = ? AND state = ? AND updated_at >= ? "
            "GROUP BY stage",
            (run_id, MessageState.DONE, since),
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
                (run_id, MessageState.CLAIMED, now),
            )
            expired = [_message(r) for r in cur.fetchall()]
            for part in _batches([m.id for m in expired], 1000):
                # token + 1 fences the stale holder out of committing.
                cur.execute(
                    self._sql(
                        "UPDATE swarm_messages SET state = ?, token = token + 1, lease_until = NULL, error = ?, "
                        f"updated_at = ? WHERE id IN ({_marks(part)}) AND state = ? AND lease_until < ?"
                    ),
                    (MessageState.QUEUED, "lease expired", now, *part, MessageState.CLAIMED, now),
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
                (run_id, MessageState.QUEUED, older_than),
            )
            stale = [_message(r) for r in cur.fetchall()]
            for part in _batches([m.id for m in stale], 1000):
                cur.execute(
                    self._sql(f"UPDATE swarm_messages SET updated_at = ? WHERE id IN ({_marks(part)}) AND state = ?"),
                    (now, *part, MessageState.QUEUED),
                )
            found.update((m.id, m) for m in stale)

        self._transaction(work)
        return list(found.values())

    def failures(self, run_id: str, limit: int = 100, recovered: bool | None = None) -> list[Failure]:
        which = {None: "", True: " AND state = ?", False: " AND state <> ?"}[recovered]
        rows = self._rows(
            "SELECT id, stage, chunk, state, attempts, error, updated_at FROM swarm_messages "
            f"WHERE run_id = ? AND (state IN (?, ?) OR error IS NOT NULL){which} ORDER BY updated_at DESC, id LIMIT ?",
            (run_id, MessageState.DEAD, MessageState.ABORTED, *([MessageState.DONE] if recovered is not None else []),
             int(limit)),
        )
        return [Failure(r[0], r[1], r[2], MessageState(r[3]), int(r[4]), r[5], float(r[6])) for r in rows]

    def counters(self, run_id: str) -> dict[str, int]:
        rows = self._rows("SELECT name, SUM(value) FROM swarm_counters WHERE run_id = ? GROUP BY name", (run_id,))
        return {name: int(total) for name, total in rows}

    # dead letters ---------------------------------------------------------------

    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None,
                        size: int | None = None, sha256: str | None = None) -> int:
        body = bytes(body)
        size = len(body) if size is None else size
        sha256 = sha256 or hashlib.sha256(body).hexdigest()
        row = (queue, message_id, _clip(reason), body[:MAX_DEAD_LETTER_BYTES], self.now(), size, sha256)
        ran = False

        def work(cur: Any) -> int:
            nonlocal ran
            if ran:  # an earlier run may have committed: find its row rather than add a second
                cur.execute(
                    self._sql(
                        "SELECT id FROM swarm_dead_letters WHERE queue = ? AND created_at = ? AND sha256 = ? "
                        "ORDER BY id DESC"
                    ),
                    (queue, row[4], sha256),
                )
                found = cur.fetchone()
                if found is not None:
                    return int(found[0])
            ran = True
            cur.execute(
                self._sql(
                    "INSERT INTO swarm_dead_letters (queue, message_id, reason, body, created_at, size, sha256) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                row,
            )
            return int(cur.lastrowid)

        return self._transaction(work)

    def dead_letters(self, queue=None, replayed=False, limit=1000) -> list[DeadLetterRecord]:
        sql = f"SELECT {_DEAD_LETTER_COLUMNS} FROM swarm_dead_letters WHERE 1 = 1"
        args: list[Any] = []
        if queue is not None:
            sql += " AND queue = ?"
            args.append(queue)
        if not replayed:
            sql += " AND replayed_at IS NULL"
        return [_dead_letter(r) for r in self._rows(sql + " ORDER BY id LIMIT ?", (*args, int(limit)))]

    def get_dead_letter(self, dl_id: int) -> DeadLetterRecord | None:
        row = self._row(f"SELECT {_DEAD_LETTER_COLUMNS} FROM swarm_dead_letters WHERE id = ?", (int(dl_id),))
        return None if row is None else _dead_letter(row)

    def mark_replayed(self, ids: Iterable[int]) -> None:
        now = self.now()
        self._write_many(
            "UPDATE swarm_dead_letters SET replayed_at = ? WHERE id = ?", [(now, int(i)) for i in sorted(set(ids))]
        )

    def revive(self, msg_id: str) -> None:
        now = self.now()

        def work(cur: Any) -> None:
            cur.execute(
                self._sql(
                    "UPDATE swarm_messages SET state = ?, attempts = 0, token = token + 1, updated_at = ? "
                    "WHERE id = ? AND state = ?"
                ),
                (MessageState.QUEUED, now, msg_id, MessageState.DEAD),
            )
            if cur.rowcount:  # its run takes work again: a worker grants only messages of running runs
                cur.execute(
                    self._sql(
                        "UPDATE swarm_runs SET status = ?, error = NULL, finished_at = NULL, updated_at = ? "
                        "WHERE id = (SELECT run_id FROM swarm_messages WHERE id = ?) AND status <> ?"
                    ),
                    (RunStatus.RUNNING, now, msg_id, RunStatus.RUNNING),
                )

        self._transaction(work)

    # housekeeping -----------------------------------------------------------------

    def prune(self, before: float, dry_run: bool = False) -> Pruned:
        runs = [r[0] for r in self._rows(
            "SELECT id FROM swarm_runs WHERE status IN (?, ?) AND finished_at < ? ORDER BY id",
            (RunStatus.DONE, RunStatus.FAILED, before),
        )]
        if dry_run:
            return Pruned(runs, sum(sum(self.counts(r).values()) for r in runs), len(self._old_letters(before)))
        messages = sum(self._prune_run(run_id) for run_id in runs)
        letters = self._old_letters(before)
        for part in _batches(letters, PRUNE_BATCH):
            self._write(f"DELETE FROM swarm_dead_letters WHERE id IN ({_marks(part)})", part)
        return Pruned(runs, messages, len(letters))

    def _prune_run(self, run_id: str) -> int:
        """Delete one run's rows, its messages in bounded transactions, the run row last; returns its messages."""
        deleted = 0
        while True:
            ids = [r[0] for r in self._rows("SELECT id FROM swarm_messages WHERE run_id = ? LIMIT ?",
                                            (run_id, PRUNE_BATCH))]
            if not ids:
                break
            self._transaction(lambda cur, ids=ids: self._delete_messages(cur, ids))
            deleted += len(ids)

        def finish(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM swarm_counters WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_phases WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_runs WHERE id = ?"), (run_id,))

        self._transaction(finish)
        return deleted

    def _delete_messages(self, cur: Any, ids: list[str]) -> None:
        cur.execute(self._sql(f"DELETE FROM swarm_counters WHERE message_id IN ({_marks(ids)})"), ids)
        cur.execute(self._sql(f"DELETE FROM swarm_messages WHERE id IN ({_marks(ids)})"), ids)

    def _old_letters(self, before: float) -> list[int]:
        """Dead letters from before ``before`` that were replayed or whose message the ledger no longer has."""
        rows = self._rows(
            "SELECT d.id FROM swarm_dead_letters d LEFT JOIN swarm_messages m ON m.id = d.message_id "
            "WHERE d.created_at < ? AND (d.replayed_at IS NOT NULL OR m.id IS NULL) ORDER BY d.id",
            (before,),
        )
        return [int(r[0]) for r in rows]


def _may_claim(row: Sequence[Any] | None, body: bytes, now: float) -> Claim | None:
    """None when the message in ``row`` may be leased for a delivery of ``body``; else the refusal."""
    if row is None:
        return Claim(None, 0, Refusal.UNPLANNED)
    state, attempts, lease_until, digest, run_status, ours = row
    if digest is not None and digest != body_digest(bytes(body)):
        return Claim(None, int(attempts), Refusal.MISMATCH)
    if state == MessageState.CLAIMED and int(ours):
        return None  # this very claim, committed by an earlier run of its transaction
    if MessageState(state).terminal:
        return Claim(None, int(attempts), MessageState(state))
    if run_status != RunStatus.RUNNING:
        return Claim(None, int(attempts), Refusal.RUN_ENDED, detail=run_status or "not in the ledger")
    if state == MessageState.CLAIMED and lease_until is not None and float(lease_until) >= now:
        return Claim(None, int(attempts), MessageState.CLAIMED)
    return None


def _message_row(m: Message, run_id: str, phase: str, state: str, now: float, parent: str | None = None) -> tuple:
    digest = None if m.body is None else body_digest(m.body)  # no body: the database refuses the row
    return (m.id, run_id, phase, m.stage, m.chunk, state, m.body, now, digest, parent)


def _claim(state: str, token: Any, attempts: Any, granted: Any) -> Claim:
    if granted and state == MessageState.CLAIMED:
        return Claim(token=int(token), attempts=int(attempts))
    return Claim(token=None, attempts=int(attempts), state=MessageState(state))


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def _id_token_pairs(n: int) -> str:
    """Matches any of ``n`` (id, token) pairs; written out, as SQLite has no IN over a list of row values."""
    return " OR ".join(["(id = ? AND token = ?)"] * n)


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0], job=row[1], params=json.loads(row[2]), status=RunStatus(row[3]), phase=row[4], error=row[5],
        created_at=float(row[6]), updated_at=float(row[7]),
        finished_at=None if row[8] is None else float(row[8]),
    )


def _message(row: Sequence[Any]) -> Message:
    return Message(id=row[0], stage=row[1], chunk=row[2], body=bytes(row[3]))


def _dead_letter(row: Sequence[Any]) -> DeadLetterRecord:
    body = bytes(row[4])
    return DeadLetterRecord(
        id=int(row[0]), queue=row[1], message_id=row[2], reason=row[3], body=body,
        created_at=float(row[5]), replayed_at=None if row[6] is None else float(row[6]),
        size=len(body) if row[7] is None else int(row[7]),
        sha256=row[8] or hashlib.sha256(body).hexdigest(),
    )


def _clip(text: str | None) -> str | None:
    return None if text is None else clip(text, MAX_ERROR_CHARS)


def _like_literal(text: str) -> str:
    """``text`` matched as itself inside a LIKE pattern whose escape character is ``!``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _batches(rows: list, size: int) -> Iterator[list]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
