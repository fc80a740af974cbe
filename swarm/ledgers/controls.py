"""What operators put in force on a running fleet (``swarm ctl``): the SQL behind ControlLedger.

One row of ``swarm_controls`` per job, stage and state in force. Lifting a
control deletes its row; a reload's row (``ControlState.RELOAD``) is never
lifted, only its generation raised, which is what workers watch.
"""
from __future__ import annotations

from typing import Any, Sequence

from swarm.ledger import FLEET, Control, ControlLedger, ControlState
from swarm.ledgers.core import SqlCore, clip_error, marks

_COLUMNS = "job, stage, state, generation, updated_at, issued_by, reason"


class ControlSql(SqlCore, ControlLedger):
    """Controls in force, by job, stage and state."""

    def controls(self, job: str | None = None) -> list[Control]:
        if job is None:
            rows = self._rows(f"SELECT {_COLUMNS} FROM swarm_controls ORDER BY job, stage, state")
        else:
            rows = self._rows(f"SELECT {_COLUMNS} FROM swarm_controls WHERE job IN (?, ?) ORDER BY job, stage, state",
                              (FLEET, job))
        return [_control(r) for r in rows]

    def set_control(self, job: str, stage: str, state: ControlState, issued_by: str, reason: str) -> Control:
        now, why = self.now(), clip_error(reason) or ""
        key = (job, stage, str(state))

        def work(cur: Any) -> Control:
            # Insert it if new, then raise its generation: run twice, it only counts one more.
            cur.execute(self._sql(self._insert_new("swarm_controls", _COLUMNS)), (*key, 0, now, issued_by, why))
            cur.execute(self._sql("UPDATE swarm_controls SET generation = generation + 1, updated_at = ?, "
                                  "issued_by = ?, reason = ? WHERE job = ? AND stage = ? AND state = ?"),
                        (now, issued_by, why, *key))
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM swarm_controls WHERE job = ? AND stage = ? AND state = ?"),
                        key)
            return _control(cur.fetchone())

        return self._transaction(work)

    def lift_controls(self, job: str, stage: str | None = None,
                      states: Sequence[ControlState] = (ControlState.PAUSED, ControlState.DRAINING)) -> list[Control]:
        names = [str(s) for s in states]
        if not names:
            return []
        where = f"job = ? AND state IN ({marks(names)})" + ("" if stage is None else " AND stage = ?")
        args = (job, *names) + (() if stage is None else (stage,))

        def work(cur: Any) -> list[Control]:
            cur.execute(self._sql(f"SELECT {_COLUMNS} FROM swarm_controls WHERE {where} ORDER BY stage, state"
                                  f"{self.lock_rows}"), args)
            lifted = [_control(r) for r in cur.fetchall()]
            cur.execute(self._sql(f"DELETE FROM swarm_controls WHERE {where}"), args)
            return lifted

        return self._transaction(work)


def _control(row: Sequence[Any]) -> Control:
    return Control(row[0], row[1], ControlState(row[2]), int(row[3]), float(row[4]), row[5] or "", row[6] or "")
