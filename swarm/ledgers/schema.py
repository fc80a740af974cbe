"""The ledger's tables, their numbered migrations, and pruning old runs: the SQL behind SchemaLedger."""
from __future__ import annotations

import functools
from typing import Any, Callable

from swarm.context import source_of
from swarm.errors import BackendError
from swarm.ledger import Pruned, RunStatus, SchemaLedger
from swarm.ledgers.core import SqlCore, batches, marks

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


def _v1(ledger: SqlCore, cur: Any) -> None:
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


def _v2(ledger: SqlCore, cur: Any) -> None:
    """Only planned work runs: each message's body digest and parent; dead letters' full size and digest.

    Rows from before have no digest; a claim of one goes by its id alone.
    """
    for table, column, kind in V2_COLUMNS:
        ledger._add_column(cur, table, column, ledger._ddl(kind))


V3_TABLES = (
    """CREATE TABLE IF NOT EXISTS swarm_checks (
        run_id {key} NOT NULL, name {key} NOT NULL, passed INTEGER NOT NULL, measured {real},
        expected {real}, tolerance {text}, detail {text}, PRIMARY KEY (run_id, name)){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_published (
        night {key} PRIMARY KEY, job {key} NOT NULL, run_id {key} NOT NULL, state VARCHAR(16) NOT NULL,
        previous {key}, updated_at {real} NOT NULL){table_options}""",
    """CREATE TABLE IF NOT EXISTS swarm_decisions (
        id {autoid}, run_id {key} NOT NULL, action VARCHAR(16) NOT NULL, reason {text} NOT NULL,
        at {real} NOT NULL){table_options}""",
)


def _v3(ledger: SqlCore, cur: Any) -> None:
    """Results you can trust: a rerun's plan on its run, checks, publications and operators' decisions."""
    ledger._add_column(cur, "swarm_runs", "spec", ledger._ddl("{text}"))
    for statement in V3_TABLES:
        cur.execute(ledger._ddl(statement))
    ledger._create_index(cur, "swarm_decisions_run", "swarm_decisions", "run_id")


V4_TABLES = (
    """CREATE TABLE IF NOT EXISTS swarm_controls (
        job {key} NOT NULL, stage {key} NOT NULL, state VARCHAR(16) NOT NULL,
        generation BIGINT NOT NULL DEFAULT 0, updated_at {real} NOT NULL, issued_by {text}, reason {text},
        PRIMARY KEY (job, stage, state)){table_options}""",
)


def _v4(ledger: SqlCore, cur: Any) -> None:
    """Fleet-wide control: the pauses, drains and config reloads operators put in force (``swarm ctl``)."""
    for statement in V4_TABLES:
        cur.execute(ledger._ddl(statement))


# Step n takes the schema from version n - 1 to n. Append steps; never edit
# one that has shipped. MySQL commits each DDL statement on its own, so a
# step must be safe to run again after failing part-way (IF NOT EXISTS...).
MIGRATIONS: tuple[Callable[[SqlCore, Any], None], ...] = (_v1, _v2, _v3, _v4)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaSql(SqlCore, SchemaLedger):
    """The schema's numbered steps, applied once each, and the deletion of old runs."""

    def init_schema(self) -> None:
        self.migrate()

    def migrate(self) -> list[int]:
        """Apply the numbered steps the database has not had yet, in order; returns their numbers."""
        applied = []
        with self._schema_lock():
            self._transaction(lambda cur: cur.execute(self._ddl(VERSION_TABLE)))
            self._refuse_newer()
            for version, step in enumerate(MIGRATIONS, start=1):
                if self._transaction(functools.partial(self._step, version=version, step=step)):
                    applied.append(version)
        return applied

    def _refuse_newer(self) -> None:
        current = self.schema_version() or 0
        if current > len(MIGRATIONS):
            raise BackendError(
                f"the ledger's schema is at version {current}, newer than this Swarm knows "
                f"({len(MIGRATIONS)}): upgrade Swarm before using this database"
            )

    def _step(self, cur: Any, version: int, step: Callable[[SqlCore, Any], None]) -> bool:
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

    # housekeeping -----------------------------------------------------------------

    def prune(self, before: float, dry_run: bool = False) -> Pruned:
        runs = [r[0] for r in self._rows(
            "SELECT id FROM swarm_runs WHERE status IN (?, ?, ?, ?) AND finished_at < ? ORDER BY id",
            (RunStatus.DONE, RunStatus.FAILED, RunStatus.REJECTED, RunStatus.CANCELLED, before),
        )]
        # A night with a publication keeps its runs' rows: which run readers see, which
        # generations reruns read, and the checks' history go by them. Only their messages go.
        nights = {r[0] for r in self._rows("SELECT night FROM swarm_published")}
        kept = [r for r in runs if source_of(r) in nights]
        if dry_run:
            return Pruned(runs, sum(self._message_count(r) for r in runs), len(self._old_letters(before)), kept)
        messages = sum(self._prune_run(run_id, keep_row=run_id in kept) for run_id in runs)
        letters = self._old_letters(before)
        for part in batches(letters, PRUNE_BATCH):
            self._write(f"DELETE FROM swarm_dead_letters WHERE id IN ({marks(part)})", part)
        return Pruned(runs, messages, len(letters), kept)

    def _prune_run(self, run_id: str, keep_row: bool = False) -> int:
        """Delete one run's rows, its messages in bounded transactions, the run row last; returns its messages.

        ``keep_row``: its messages go; its run row, phases and checks stay, and its counters as one row a name.
        """
        if keep_row:
            self._transaction(functools.partial(self._total_counters, run_id=run_id))
        deleted = 0
        while True:
            ids = [r[0] for r in self._rows("SELECT id FROM swarm_messages WHERE run_id = ? LIMIT ?",
                                            (run_id, PRUNE_BATCH))]
            if not ids:
                break
            self._transaction(functools.partial(self._delete_messages, ids=ids))
            deleted += len(ids)
        if keep_row:
            return deleted

        def finish(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM swarm_counters WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_phases WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_checks WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_decisions WHERE run_id = ?"), (run_id,))
            cur.execute(self._sql("DELETE FROM swarm_runs WHERE id = ?"), (run_id,))

        self._transaction(finish)
        return deleted

    def _total_counters(self, cur: Any, run_id: str) -> None:
        """A run's counters as one row a name, under a message id no message has: what outlives its messages."""
        total_id = f"{run_id}/*"
        cur.execute(self._sql("SELECT name, SUM(value) FROM swarm_counters WHERE run_id = ? GROUP BY name"), (run_id,))
        totals = cur.fetchall()
        cur.execute(self._sql("DELETE FROM swarm_counters WHERE run_id = ?"), (run_id,))
        if totals:
            insert = "INSERT INTO swarm_counters (message_id, name, run_id, value) VALUES (?, ?, ?, ?)"
            cur.executemany(self._sql(insert), [(total_id, name, run_id, int(value)) for name, value in totals])

    def _message_count(self, run_id: str) -> int:
        row = self._row("SELECT COUNT(*) FROM swarm_messages WHERE run_id = ?", (run_id,))
        return 0 if row is None else int(row[0])

    def _delete_messages(self, cur: Any, ids: list[str]) -> None:
        cur.execute(self._sql(f"DELETE FROM swarm_counters WHERE message_id IN ({marks(ids)})"), ids)
        cur.execute(self._sql(f"DELETE FROM swarm_messages WHERE id IN ({marks(ids)})"), ids)

    def _old_letters(self, before: float) -> list[int]:
        """Dead letters from before ``before`` that were replayed or whose message the ledger no longer has."""
        rows = self._rows(
            "SELECT d.id FROM swarm_dead_letters d LEFT JOIN swarm_messages m ON m.id = d.message_id "
            "WHERE d.created_at < ? AND (d.replayed_at IS NOT NULL OR m.id IS NULL) ORDER BY d.id",
            (before,),
        )
        return [int(r[0]) for r in rows]
