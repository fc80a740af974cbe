"""Dead letters gathered, shown and replayed: the SQL behind DeadLetterLedger."""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Sequence

from swarm.ledger import DeadLetterLedger, DeadLetterRecord, MessageState, RunStatus
from swarm.ledgers.core import SqlCore, clip_error
from swarm.limits import MAX_DEAD_LETTER_BYTES

_DEAD_LETTER_COLUMNS = "id, queue, message_id, reason, body, created_at, replayed_at, size, sha256"


class DeadLetterSql(SqlCore, DeadLetterLedger):
    """Dead letters as the broker gave them up, and a replay's revival of their message."""

    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None,
                        size: int | None = None, sha256: str | None = None) -> int:
        body = bytes(body)
        size = len(body) if size is None else size
        sha256 = sha256 or hashlib.sha256(body).hexdigest()
        row = (queue, message_id, clip_error(reason), body[:MAX_DEAD_LETTER_BYTES], self.now(), size, sha256)
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

    def dead_letters(self, queue: str | None = None, replayed: bool = False,
                     limit: int = 1000) -> list[DeadLetterRecord]:
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


def _dead_letter(row: Sequence[Any]) -> DeadLetterRecord:
    body = bytes(row[4])
    return DeadLetterRecord(
        id=int(row[0]), queue=row[1], message_id=row[2], reason=row[3], body=body,
        created_at=float(row[5]), replayed_at=None if row[6] is None else float(row[6]),
        size=len(body) if row[7] is None else int(row[7]),
        sha256=row[8] or hashlib.sha256(body).hexdigest(),
    )
