"""Checking a run's staged result, and publishing it: the promotion from staging to the readers' tables.

A job's published tables are written only here. Workers write a run's rows
to ``<table>_staged`` under ``<run>/``; once the run's checks pass, the
promotion copies them to ``<table>``, removes the rows (and columns) of the
previously published run that the new result no longer has, and records
the night as showing this run, with the run done, in one ledger
transaction.

Each step is idempotent and the ledger records that a promotion has
begun, so a promotion cut off anywhere is finished, exactly, by whatever
takes the night's lock next (its master resumed, a rerun, ``swarm publish``).
HBase has no transaction across rows: while a promotion runs, a reader of
the table may see some rows of the new result and some of the old, each
row whole; never a row mixed of both, once the promotion ends never the old.
A reader that must never see a mix reads through ``published_rows``: the
staged rows of the run the ledger names as wholly published, which switches
from the old result to the new in one ledger transaction.
"""
from __future__ import annotations

import logging
from typing import Iterator, Mapping

from swarm.checks import History, Result, evaluate
from swarm.context import source_of
from swarm.effects import Delete, Put
from swarm.errors import ConfigError, PublishRefused
from swarm.failpoints import failpoint
from swarm.ledger import (
    CheckResult,
    MasterLedger,
    Publication,
    PublishState,
    ResultView,
    Run,
    RunStatus,
    known_run,
)
from swarm.stage import Job, staging_table
from swarm.table import Row, TableStore, apply_in_batches

log = logging.getLogger("swarm.publish")
Cells = Mapping[bytes, bytes]

PROMOTE_BATCH = 1000  # rows written per table write


def staged_rows(tables: TableStore, table: str, run: str) -> Iterator[Row]:
    """``run``'s rows of published table ``table``, keyed as its handlers wrote them, in key order."""
    prefix = f"{run}/".encode()
    for key, cells in tables.scan(staging_table(table), prefix=prefix):
        yield key[len(prefix):], cells


def published_rows(ledger: ResultView, tables: TableStore, night: str, table: str) -> Iterator[Row]:
    """The night's wholly published rows of ``table``: the new result once its promotion is recorded, the old before.

    Empty while nothing of the night was ever published.
    """
    pub = ledger.publication(night)
    if pub is None:
        return iter(())
    run = pub.run_id if pub.state == PublishState.PUBLISHED else pub.previous
    return staged_rows(tables, table, run) if run else iter(())


def seed_from_published(job: Job, night: str, run_id: str, ledger: ResultView, tables: TableStore) -> int:
    """Stage the night's published result as ``run_id``'s own, for a rerun of some chunks only; rows staged.

    The rerun's chunks then overwrite their rows, and its result (checked,
    then published) is the whole night's, not those chunks' alone. A row a
    chosen chunk no longer writes stays as it was published.
    """
    written = 0
    for spec in job.published_tables():
        staged = staging_table(spec.name)
        rows = published_rows(ledger, tables, night, spec.name)
        written += apply_in_batches(tables, (Put(staged, f"{run_id}/".encode() + key, {k: v for k, v in cells.items()})
                                             for key, cells in rows), PROMOTE_BATCH)
    return written


def run_checks(job: Job, run_id: str, params: Mapping[str, str], ledger: MasterLedger,
               tables: TableStore) -> list[CheckResult]:
    """Run the job's checks on ``run_id``'s staged result and record them; the results."""
    result = Result(run_id, params, ledger.counters(run_id), lambda table: staged_rows(tables, table, run_id))
    night = source_of(run_id)
    like = {k: v for k, v in params.items() if k != "date"}  # the same region, say: other dates
    history = History(lambda name, runs: ledger.check_history(job.name, name, runs, night, like))
    results = evaluate(job.checks.values(), result, history)
    ledger.save_checks(run_id, results)
    return results


def publish(job: Job, run_id: str, ledger: MasterLedger, tables: TableStore) -> None:
    """Promote ``run_id``'s staged result to the published tables; the caller holds the night's lock."""
    pub = ledger.begin_publish(source_of(run_id), job.name, run_id)
    failpoint("publish.begun")
    _promote_all(job, pub, ledger, tables)


def finish_interrupted(job: Job, night: str, ledger: MasterLedger, tables: TableStore) -> str | None:
    """Finish a promotion of ``night`` that was cut off; the run it published, if there was one."""
    pub = ledger.publication(night)
    if pub is None or pub.state != PublishState.PUBLISHING:
        return None
    log.warning("finishing the interrupted publication of %s", pub.run_id)
    _promote_all(job, pub, ledger, tables)
    return pub.run_id


def _promote_all(job: Job, pub: Publication, ledger: MasterLedger, tables: TableStore) -> None:
    for spec in job.published_tables():
        rows = promote(tables, spec.name, pub.run_id, pub.previous)
        log.info("published %s: %d write(s) to %s", pub.run_id, rows, spec.name)
    failpoint("publish.before_record")
    ledger.finish_publish(pub.night, pub.run_id)


def promote(tables: TableStore, table: str, run: str, previous: str | None, batch: int | None = None) -> int:
    """Make ``table`` show ``run``'s staged rows where it showed ``previous``'s; the rows written.

    A merge of the two runs' staged rows, both in key order: a row only the
    new run has is put, a row only the previous run had is deleted, and a
    row both have is put, with the columns only the previous one had deleted.
    """
    batch = batch or PROMOTE_BATCH
    new = staged_rows(tables, table, run)
    old = staged_rows(tables, table, previous) if previous and previous != run else iter(())
    writes: list[Put | Delete] = []
    written = 0
    for key, cells, before in _merged(new, old):
        if cells is None:
            writes.append(Delete(table, key))
        else:
            writes.append(Put(table, key, {k: v for k, v in cells.items()}))
            extra = tuple(sorted(set(before or {}) - set(cells)))
            if extra:
                writes.append(Delete(table, key, extra))
        if len(writes) >= batch:
            written += _flush(tables, writes)
    return written + _flush(tables, writes)


def _flush(tables: TableStore, writes: list[Put | Delete]) -> int:
    if not writes:
        return 0
    tables.apply(writes)
    n = len(writes)
    writes.clear()
    failpoint("publish.mid_rows")
    return n


def _merged(new: Iterator[Row], old: Iterator[Row]) -> Iterator[tuple[bytes, Cells | None, Cells | None]]:
    """``(key, new cells or None, old cells or None)`` for every key of either, in key order."""
    a, b = next(new, None), next(old, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield a[0], a[1], None
            a = next(new, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(old, None)
        else:
            yield a[0], a[1], b[1]
            a, b = next(new, None), next(old, None)


# held runs: an operator's decision ---------------------------------------------------


def publish_held(job: Job, run_id: str, reason: str, ledger: MasterLedger, tables: TableStore, holder: str) -> Run:
    """Publish a held run's result despite its checks; the reason is kept with the run."""
    _held(ledger, run_id, "publish", reason)
    night = source_of(run_id)
    ledger.lock_master(night, holder)
    try:
        finish_interrupted(job, night, ledger, tables)
        if known_run(ledger, run_id).status == RunStatus.HELD:
            ledger.decide(run_id, "publish", reason.strip())
            publish(job, run_id, ledger, tables)
    finally:
        ledger.unlock_master(night)
    return known_run(ledger, run_id)


def reject_held(run_id: str, reason: str, ledger: MasterLedger, holder: str) -> Run:
    """Reject a held run: its result is never published, the night keeps what it showed; the reason is kept."""
    _held(ledger, run_id, "reject", reason)
    night = source_of(run_id)
    ledger.lock_master(night, holder)
    try:
        ledger.decide(run_id, "reject", reason.strip(), status=RunStatus.REJECTED)
        ledger.update_run(run_id, error=f"rejected: {reason.strip()}")
    finally:
        ledger.unlock_master(night)
    return known_run(ledger, run_id)


def _held(ledger: MasterLedger, run_id: str, action: str, reason: str) -> Run:
    run = ledger.get_run(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r}; `swarm runs` lists them")
    if not reason.strip():
        raise ConfigError(f"{action}: say why with --reason, for the history")
    pub = ledger.publication(source_of(run_id))
    resuming = pub is not None and pub.run_id == run_id and pub.state == PublishState.PUBLISHING
    if run.status != RunStatus.HELD and not (action == "publish" and resuming):
        raise PublishRefused(f"{run_id} is {run.status}, not held: only a held run is published or rejected by hand")
    return run
