"""Runs, their phases, the master's plan and watch, and the history.

The SQL behind ``MasterLedger`` and ``HistoryLedger``; the master's lock is the dialect's.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from swarm.ledger import (
    Failure,
    HistoryLedger,
    MasterLedger,
    Message,
    MessageState,
    PhaseState,
    Recorded,
    Run,
    RunStatus,
)
from swarm.ledgers.core import MESSAGE_COLUMNS, SqlCore, batches, clip_error, marks, message_of, message_row

_RUN_COLUMNS = "id, job, params, status, phase, error, created_at, updated_at, finished_at, spec"
_FAILURE_COLUMNS = "id, stage, chunk, state, attempts, error, updated_at"


class RunSql(SqlCore, MasterLedger, HistoryLedger):
    """A run's row, its phases' rows, and its messages as the master plans, publishes and watches them."""

    def open_run(self, run_id: str, job: str, params: Mapping[str, Any],
                 spec: Mapping[str, Any] | None = None) -> Run:
        now = self.now()
        row = (run_id, job, json.dumps(dict(params), sort_keys=True), RunStatus.RUNNING, None, None, now, now, None,
               json.dumps(dict(spec), sort_keys=True) if spec else None)
        self._write(self._insert_new("swarm_runs", _RUN_COLUMNS), row)
        run = self.get_run(run_id)
        assert run is not None
        return run

    def get_run(self, run_id: str) -> Run | None:
        row = self._row(f"SELECT {_RUN_COLUMNS} FROM swarm_runs WHERE id = ?", (run_id,))
        return None if row is None else _run(row)

    def reads(self, run_id: str) -> Mapping[str, str]:
        run = self.get_run(run_id)
        return {} if run is None else dict(run.reads)

    def jobs(self) -> list[str]:
        return [r[0] for r in self._rows("SELECT DISTINCT job FROM swarm_runs ORDER BY job")]

    def runs(
        self,
        job: str | None = None,
        status: RunStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        where: list[str] = []
        args: list[Any] = []
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

    def update_run(
        self, run_id: str, *, status: RunStatus | None = None, phase: str | None = None,
        error: str | None = None, finished: bool = False,
    ) -> None:
        now = self.now()
        sets: list[str] = ["updated_at = ?"]
        args: list[Any] = [now]
        for column, value in (("status", status), ("phase", phase), ("error", clip_error(error))):
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

    # the plan ---------------------------------------------------------------------

    def save_plan(self, run_id: str, phase: str, messages: Sequence[Message]) -> None:
        now = self.now()
        rows = [message_row(m, run_id, phase, MessageState.PLANNED, now) for m in messages]

        def work(cur: Any) -> None:
            for batch in batches(rows, 1000):
                cur.executemany(self._sql(self._insert_new("swarm_messages", MESSAGE_COLUMNS)), batch)
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
        return [message_of(r) for r in rows]

    def mark_queued(self, ids: Sequence[str]) -> None:
        now = self.now()
        # Sorted, as every multi-row write here is, so that transactions take row locks in one order.
        ordered = sorted(set(ids))

        def work(cur: Any) -> None:
            for part in batches(ordered, 1000):
                cur.execute(
                    self._sql(
                        "UPDATE swarm_messages SET state = ?, updated_at = ? "
                        f"WHERE state = ? AND id IN ({marks(part)})"
                    ),
                    (MessageState.QUEUED, now, MessageState.PLANNED, *part),
                )

        if ordered:
            self._transaction(work)

    # the master's watch -----------------------------------------------------------

    def counts(self, run_id: str, phase: str | None = None) -> dict[MessageState, int]:
        sql = "SELECT state, COUNT(*) FROM swarm_messages WHERE run_id = ?"
        args: list[Any] = [run_id]
        if phase is not None:
            sql += " AND phase = ?"
            args.append(phase)
        return {MessageState(state): int(n) for state, n in self._rows(sql + " GROUP BY state", args)}

    def recorded(self, run_id: str, phase: str, stages: Sequence[str] | None = None) -> list[Recorded]:
        sql = ("SELECT m.id, m.stage, m.chunk, m.body, m.state, p.stage FROM swarm_messages m "
               "LEFT JOIN swarm_messages p ON p.id = m.parent WHERE m.run_id = ? AND m.phase = ?")
        args: list[Any] = [run_id, phase]
        if stages is not None:
            sql += f" AND m.stage IN ({marks(list(stages))})"
            args += list(stages)
        rows = self._rows(sql + " ORDER BY m.id", args)
        return [Recorded(message_of(r[:4]), MessageState(r[4]), r[5]) for r in rows]

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
            expired = [message_of(r) for r in cur.fetchall()]
            for part in batches([m.id for m in expired], 1000):
                # token + 1 fences the stale holder out of committing.
                cur.execute(
                    self._sql(
                        "UPDATE swarm_messages SET state = ?, token = token + 1, lease_until = NULL, error = ?, "
                        f"updated_at = ? WHERE id IN ({marks(part)}) AND state = ? AND lease_until < ?"
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
            stale = [message_of(r) for r in cur.fetchall()]
            for part in batches([m.id for m in stale], 1000):
                cur.execute(
                    self._sql(f"UPDATE swarm_messages SET updated_at = ? WHERE id IN ({marks(part)}) AND state = ?"),
                    (now, *part, MessageState.QUEUED),
                )
            found.update((m.id, m) for m in stale)

        self._transaction(work)
        return list(found.values())

    # splitting the rest of a phase's last long ranges (``master.splitting``) --------

    def unstarted(self, run_id: str, phase: str, stages: Sequence[str], limit: int) -> list[Message]:
        if not stages:
            return []
        rows = self._rows(
            "SELECT id, stage, chunk, body FROM swarm_messages WHERE run_id = ? AND state = ? AND phase = ? "
            f"AND token = 0 AND stage IN ({marks(list(stages))}) ORDER BY id LIMIT ?",
            (run_id, MessageState.QUEUED, phase, *stages, int(limit)),
        )
        return [message_of(r) for r in rows]

    def split(self, run_id: str, phase: str, parent_id: str, children: Sequence[Message]) -> bool:
        now = self.now()
        rows = sorted((message_row(c, run_id, phase, MessageState.QUEUED, now, parent=parent_id) for c in children),
                      key=lambda r: r[0])
        ids = [r[0] for r in rows]

        def work(cur: Any) -> bool:
            # Token 0: never claimed, so no worker has written any of its work (a claim takes a new token).
            cur.execute(
                self._sql("UPDATE swarm_messages SET state = ?, lease_until = NULL, updated_at = ? "
                          "WHERE id = ? AND state = ? AND token = 0"),
                (MessageState.DONE, now, parent_id, MessageState.QUEUED),
            )
            if cur.rowcount == 1:
                cur.executemany(self._sql(self._insert_new("swarm_messages", MESSAGE_COLUMNS)), rows)
                return True
            # Done with token 0 is a split's mark (a worker's complete needs a claim): an earlier run of
            # this very transaction, whose COMMIT went unacknowledged, if these children are its.
            cur.execute(self._sql("SELECT state, token FROM swarm_messages WHERE id = ?"), (parent_id,))
            found = cur.fetchone()
            if found is None or found[0] != MessageState.DONE or int(found[1]) != 0 or not ids:
                return False
            cur.execute(
                self._sql(f"SELECT COUNT(*) FROM swarm_messages WHERE parent = ? AND id IN ({marks(ids)})"),
                (parent_id, *ids),
            )
            return int(cur.fetchone()[0]) == len(ids)

        return self._transaction(work)

    # history ----------------------------------------------------------------------

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

    def stage_counts(self, run_id: str) -> dict[str, dict[MessageState, int]]:
        rows = self._rows(
            "SELECT stage, state, COUNT(*) FROM swarm_messages WHERE run_id = ? GROUP BY stage, state", (run_id,)
        )
        out: dict[str, dict[MessageState, int]] = {}
        for stage, state, n in rows:
            out.setdefault(stage, {})[MessageState(state)] = int(n)
        return out

    def done_series(self, run_id: str, bucket: float,
                    counter: str = "rows") -> dict[str, list[tuple[float, int, int]]]:
        bucket = float(bucket)
        if not bucket > 0:
            raise ValueError(f"a time bucket is a positive number of seconds, not {bucket}")
        # Grouped by the bucket's number; the (run_id, state) index finds the done messages,
        # the counters' primary key (message_id, name) their value: at most one row each.
        rows = self._rows(
            f"SELECT m.stage, {self._floor('m.updated_at / ?')} AS slot, COUNT(*), COALESCE(SUM(c.value), 0) "
            "FROM swarm_messages m LEFT JOIN swarm_counters c ON c.message_id = m.id AND c.name = ? "
            "WHERE m.run_id = ? AND m.state = ? GROUP BY m.stage, slot ORDER BY m.stage, slot",
            (bucket, counter, run_id, MessageState.DONE),
        )
        out: dict[str, list[tuple[float, int, int]]] = {}
        for stage, slot, n, total in rows:
            out.setdefault(stage, []).append((int(slot) * bucket, int(n), int(total)))
        return out

    def message_info(self, msg_id: str) -> Failure | None:
        row = self._row(f"SELECT {_FAILURE_COLUMNS} FROM swarm_messages WHERE id = ?", (msg_id,))
        return None if row is None else _failure(row)

    def failures(self, run_id: str, limit: int = 100, recovered: bool | None = None) -> list[Failure]:
        which = {None: "", True: " AND state = ?", False: " AND state <> ?"}[recovered]
        rows = self._rows(
            f"SELECT {_FAILURE_COLUMNS} FROM swarm_messages "
            f"WHERE run_id = ? AND (state IN (?, ?) OR error IS NOT NULL){which} ORDER BY updated_at DESC, id LIMIT ?",
            (run_id, MessageState.DEAD, MessageState.ABORTED, *([MessageState.DONE] if recovered is not None else []),
             int(limit)),
        )
        return [_failure(r) for r in rows]

    def counters(self, run_id: str) -> dict[str, int]:
        rows = self._rows("SELECT name, SUM(value) FROM swarm_counters WHERE run_id = ? GROUP BY name", (run_id,))
        return {name: int(total) for name, total in rows}


def _run(row: Sequence[Any]) -> Run:
    return Run(
        id=row[0], job=row[1], params=json.loads(row[2]), status=RunStatus(row[3]), phase=row[4], error=row[5],
        created_at=float(row[6]), updated_at=float(row[7]),
        finished_at=None if row[8] is None else float(row[8]), spec=json.loads(row[9]) if row[9] else {},
    )


def _failure(row: Sequence[Any]) -> Failure:
    """The ``Failure`` in a row of ``_FAILURE_COLUMNS``."""
    return Failure(row[0], row[1], row[2], MessageState(row[3]), int(row[4]), row[5], float(row[6]))


def _like_literal(text: str) -> str:
    """``text`` matched as itself inside a LIKE pattern whose escape character is ``!``."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
