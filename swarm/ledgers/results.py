"""A run's checks, the publication of its result, and operators' decisions: the SQL behind ResultLedger."""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from swarm.errors import PublishRefused
from swarm.ledger import CheckResult, Decision, Publication, PublishState, ResultLedger, RunStatus
from swarm.ledgers.core import SqlCore, clip_error

_PUBLICATION = "night, job, run_id, state, previous, updated_at"
HISTORY_SCAN = 20  # published runs read per one wanted, when only those with some params count


class ResultSql(SqlCore, ResultLedger):
    """Checks per run, one publication row per night, and the decisions operators took."""

    def save_checks(self, run_id: str, results: Sequence[CheckResult]) -> None:
        rows = [(run_id, r.name, int(r.passed), r.measured, r.expected, r.tolerance, clip_error(r.detail) or "")
                for r in results]

        def work(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM swarm_checks WHERE run_id = ?"), (run_id,))
            if rows:
                cur.executemany(self._sql(
                    "INSERT INTO swarm_checks (run_id, name, passed, measured, expected, tolerance, detail) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)"), rows)

        self._transaction(work)

    def checks(self, run_id: str) -> list[CheckResult]:
        rows = self._rows("SELECT name, passed, measured, expected, tolerance, detail FROM swarm_checks "
                          "WHERE run_id = ? ORDER BY name", (run_id,))
        return [CheckResult(r[0], bool(r[1]), _float(r[2]), _float(r[3]), r[4] or "", r[5] or "") for r in rows]

    def check_history(self, job: str, name: str, limit: int, exclude_night: str,
                      like: Mapping[str, str] | None = None) -> list[float]:
        # A night's published run is the one its publication row names; older ones no longer count.
        rows = self._rows(
            "SELECT c.measured, r.params FROM swarm_published p JOIN swarm_checks c ON c.run_id = p.run_id "
            "JOIN swarm_runs r ON r.id = p.run_id "
            "WHERE p.job = ? AND p.state = ? AND c.name = ? AND p.night <> ? AND c.measured IS NOT NULL "
            "ORDER BY r.created_at DESC, r.id LIMIT ?",
            (job, PublishState.PUBLISHED, name, exclude_night, int(limit) * HISTORY_SCAN + HISTORY_SCAN),
        )
        wanted = dict(like or {})
        found = [float(value) for value, params in rows if _matches(json.loads(params), wanted)]
        return found[:limit]
    def publication(self, night: str) -> Publication | None:
        row = self._row(f"SELECT {_PUBLICATION} FROM swarm_published WHERE night = ?", (night,))
        return None if row is None else _publication(row)

    def begin_publish(self, night: str, job: str, run_id: str) -> Publication:
        def work(cur: Any) -> Publication:
            cur.execute(self._sql(f"SELECT {_PUBLICATION} FROM swarm_published WHERE night = ?"), (night,))
            row = cur.fetchone()
            now = self.now()
            if row is None:
                cur.execute(self._sql(f"INSERT INTO swarm_published ({_PUBLICATION}) VALUES (?, ?, ?, ?, ?, ?)"),
                            (night, job, run_id, PublishState.PUBLISHING, None, now))
                return Publication(night, job, run_id, PublishState.PUBLISHING, None, now)
            current = _publication(row)
            if current.state == PublishState.PUBLISHING:
                if current.run_id != run_id:
                    raise PublishRefused(f"{night}: the publication of {current.run_id} has not finished; "
                                     "finish it first (`swarm publish` of that run, or its master)")
                return current
            previous = current.run_id if current.run_id != run_id else current.previous
            cur.execute(self._sql("UPDATE swarm_published SET run_id = ?, state = ?, previous = ?, updated_at = ? "
                                  "WHERE night = ?"), (run_id, PublishState.PUBLISHING, previous, now, night))
            return Publication(night, job, run_id, PublishState.PUBLISHING, previous, now)

        return self._transaction(work)

    def finish_publish(self, night: str, run_id: str) -> None:
        now = self.now()

        def work(cur: Any) -> None:
            cur.execute(self._sql("UPDATE swarm_published SET state = ?, updated_at = ? "
                                  "WHERE night = ? AND run_id = ?"), (PublishState.PUBLISHED, now, night, run_id))
            cur.execute(self._sql("UPDATE swarm_runs SET status = ?, error = NULL, updated_at = ?, "
                                  "finished_at = COALESCE(finished_at, ?) WHERE id = ?"),
                        (RunStatus.DONE, now, now, run_id))

        self._transaction(work)

    def decide(self, run_id: str, action: str, reason: str, status: RunStatus | None = None) -> None:
        now = self.now()

        def work(cur: Any) -> None:
            cur.execute(self._sql("INSERT INTO swarm_decisions (run_id, action, reason, at) VALUES (?, ?, ?, ?)"),
                        (run_id, action, clip_error(reason) or "", now))
            if status is not None:
                cur.execute(self._sql("UPDATE swarm_runs SET status = ?, updated_at = ? WHERE id = ?"),
                            (status, now, run_id))

        self._transaction(work)

    def decisions(self, run_id: str) -> list[Decision]:
        rows = self._rows("SELECT run_id, action, reason, at FROM swarm_decisions WHERE run_id = ? ORDER BY id",
                          (run_id,))
        return [Decision(r[0], r[1], r[2], float(r[3])) for r in rows]


def _matches(params: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    return all(str(params.get(k)) == str(v) for k, v in wanted.items())


def _publication(row: Sequence[Any]) -> Publication:
    return Publication(row[0], row[1], row[2], PublishState(row[3]), row[4], float(row[5]))


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
