"""Generations: the intermediate and staged rows each run of a night wrote, and pruning the old ones.

Every run writes its intermediate rows under ``<run>/`` (``ctx.output_key``)
and its result under ``<run>/`` in the staging tables. A generation is kept
while anything may still read it: the night's published run (and, during a
promotion, the run it replaces), a run still running or held, the run that
last completed each phase (the next rerun reads it), and every generation
those runs read. The others are pruned.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable

from swarm.context import source_of
from swarm.effects import Delete
from swarm.ledger import HistoryLedger, MasterLedger, PhaseState, PublishState, Run, RunStatus
from swarm.stage import Job, staging_table
from swarm.table import TableStore, apply_in_batches

DELETE_BATCH = 1000


class GenerationLedger(MasterLedger, HistoryLedger):
    """What pruning reads: runs, their phases, and the night's publication."""


@dataclasses.dataclass(frozen=True)
class Generation:
    run: Run
    kept: str  # why it is kept; "" when it may be pruned


def generation_tables(job: Job) -> list[str]:
    """The tables whose rows are keyed by the run that wrote them."""
    return [t.name for t in job.tables.values() if t.intermediate] + \
        [staging_table(t.name) for t in job.tables.values() if t.published]


def nights(job: Job, ledger: HistoryLedger) -> dict[str, list[Run]]:
    """The job's runs by night (the id of each night's first run), oldest run first."""
    found: dict[str, list[Run]] = {}
    for run in sorted(ledger.runs(job=job.name, limit=1_000_000), key=lambda r: (r.created_at, r.id)):
        found.setdefault(source_of(run.id), []).append(run)
    return found


def generations(job: Job, ledger: GenerationLedger, night: str, runs: list[Run]) -> list[Generation]:
    """The night's runs, each with why it is kept, if it is."""
    why: dict[str, str] = {}

    def keep(run_id: str | None, reason: str) -> None:
        if run_id and run_id not in why:
            why[run_id] = reason

    by_id = {r.id: r for r in runs}
    pub = ledger.publication(night)
    if pub is not None:
        keep(pub.run_id, "published" if pub.state == PublishState.PUBLISHED else "being published")
        if pub.state == PublishState.PUBLISHING:
            keep(pub.previous, "its result is being replaced")
    for run in runs:
        if run.status in (RunStatus.RUNNING, RunStatus.HELD):
            keep(run.id, run.status.value)
    for phase in job.phases:
        done = [r for r in runs if ledger.phase_state(r.id, phase) == PhaseState.DONE]
        if done:
            keep(done[-1].id, f"last to complete phase {phase}")
    for run_id in list(why):
        for phase, read in (by_id[run_id].reads.items() if run_id in by_id else ()):
            keep(read, f"{run_id} reads its phase {phase}")
    return [Generation(r, why.get(r.id, "")) for r in runs]


def prune(job: Job, ledger: GenerationLedger, tables: TableStore, dry_run: bool = False,
          only: Iterable[str] | None = None) -> dict[str, int]:
    """Delete the rows of every generation no longer kept (of nights ``only``, if given); rows per run."""
    deleted: dict[str, int] = {}
    wanted = set(only) if only is not None else None
    for night, runs in nights(job, ledger).items():
        if wanted is not None and night not in wanted:
            continue
        for gen in generations(job, ledger, night, runs):
            if not gen.kept:
                deleted[gen.run.id] = _delete_generation(tables, generation_tables(job), gen.run.id, dry_run)
    return deleted


def _delete_generation(tables: TableStore, names: list[str], run_id: str, dry_run: bool) -> int:
    prefix = f"{run_id}/".encode()
    count = 0
    for name in names:
        keys = (key for key, _ in tables.scan(name, prefix=prefix, batch_size=DELETE_BATCH))
        if dry_run:
            count += sum(1 for _ in keys)
        else:
            count += apply_in_batches(tables, (Delete(name, key) for key in keys), DELETE_BATCH)
    return count
