"""Rerunning chosen stages of finished runs from their intermediate tables, without the stages upstream.

A rerun of run R is a run of its own, ``R+r<N>``, whose handlers read R's
intermediate data (``ctx.source_run``). It holds R's one-master lock while it
works, so it never overlaps a master of the same job and date.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Callable, Iterable, Sequence

from master.coordinator import Master, MasterSettings
from master.planner import plan_phase
from swarm.context import RERUN_MARK
from swarm.errors import ConfigError, MasterLocked, RerunLocked, RerunRefused, SwarmError  # noqa: F401 - re-exported
from swarm.ledger import HistoryLedger, Ledger, MasterLedger, Run, RunStatus
from swarm.signing import SiteKeys
from swarm.stage import Job
from swarm.table import TableStore


@dataclasses.dataclass(frozen=True)
class RerunPlan:
    source: str  # the run being rerun
    run_id: str  # the rerun's own id
    phases: list[str]
    chunks: dict[str, list[str]]  # per phase, the chunk ids its planner gives (first phase: after the filter)


def dates_between(spec: str) -> list[str]:
    """``2026-11-01..2026-11-03`` or ``2026-11-01,2026-11-05`` -> the listed days, in order."""
    days: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        first, _, last = part.partition("..")
        try:
            start = datetime.date.fromisoformat(first)
            end = datetime.date.fromisoformat(last) if last else start
        except ValueError:
            raise ConfigError(f"--dates {spec!r}: expected YYYY-MM-DD, YYYY-MM-DD..YYYY-MM-DD or a list") from None
        if end < start:
            raise ConfigError(f"--dates {part!r}: the range ends before it starts")
        days += [(start + datetime.timedelta(d)).isoformat() for d in range((end - start).days + 1)]
    return days


def plan_rerun(job: Job, params: dict, from_stage: str, ledger: Ledger, tables: TableStore,
               chunks: Iterable[str] | None = None, options: dict | None = None) -> RerunPlan:
    """What a rerun would do: refuses unless the source run exists and has finished."""
    phases = _phases_from(job, from_stage)
    source = job.run_id(params)
    run = ledger.get_run(source)
    if run is None:
        raise RerunRefused(f"{source} has never run: start it with `{_master_command(job, params)}` instead")
    if run.status == RunStatus.RUNNING:
        raise _unfinished(job, params, source, ledger)
    run_id = f"{source}{RERUN_MARK}{_next_number(ledger, job, source)}"
    wanted = set(chunks or ())
    planned = {}
    for phase in phases:
        ids = [m.chunk for m in plan_phase(job, run_id, phase, tables, options)]
        if phase == phases[0] and wanted:
            unknown = sorted(wanted - set(ids))
            if unknown:
                raise ConfigError(f"--chunks: phase {phase} of {source} has no chunk(s) {unknown}")
            ids = [c for c in ids if c in wanted]
        planned[phase] = ids
    return RerunPlan(source, run_id, phases, planned)


def _unfinished(job: Job, params: dict, source: str, ledger: MasterLedger) -> RerunRefused:
    """Why a run still marked running cannot be rerun: a master runs it now, or one stopped before the end."""
    try:
        ledger.lock_master(source, "rerun, checking for a master")
    except MasterLocked as exc:
        return RerunLocked(f"{source} is being run right now by {exc.holder}; rerun it when it has finished")
    ledger.unlock_master(source)
    return RerunRefused(f"{source} has not finished and no master is running it: finish it first with "
                        f"`{_master_command(job, params)}` (it resumes the run), then rerun it")


def _master_command(job: Job, params: dict) -> str:
    args = [f"--date {v}" if k == "date" else f"--param {k}={v}" for k, v in params.items()]
    return " ".join(["swarm master", job.name, *args])


def _phases_from(job: Job, stage: str) -> list[str]:
    if stage not in job.stages:
        raise ConfigError(f"--from-stage: job {job.name} has no stage {stage!r}; it has {list(job.stages)}")
    phase = job.stages[stage].phase
    if job.entries[phase] != stage:
        entries = [job.entries[p] for p in job.phases]
        raise ConfigError(f"--from-stage {stage}: a rerun starts at the first stage of a phase, one of {entries}")
    return job.phases[job.phases.index(phase):]


def _next_number(ledger: HistoryLedger, job: Job, source: str) -> int:
    reruns = [r.id for r in ledger.runs(job=job.name, limit=10_000) if r.id.startswith(source + RERUN_MARK)]
    numbers = [int(r.rsplit(RERUN_MARK, 1)[1]) for r in reruns if r.rsplit(RERUN_MARK, 1)[1].isdigit()]
    return max(numbers, default=0) + 1


def run_rerun(plan: RerunPlan, job: Job, params: dict, broker, ledger: MasterLedger, tables: TableStore,
              settings: MasterSettings | None = None, progress: Callable | None = None,
              keys: SiteKeys | None = None) -> Run:
    """Carry out a planned rerun; ``MasterLocked`` becomes a refusal naming the holder."""
    first = plan.phases[0]
    try:
        return Master(job, params, broker, ledger, tables, settings, progress, run_id=plan.run_id,
                      phases=plan.phases, chunks=plan.chunks[first], lock_key=plan.source, keys=keys).run()
    except MasterLocked as exc:
        raise RerunLocked(f"{plan.source} is being run right now by {exc.holder}; rerun it when it has finished") \
            from None


def describe(plans: Sequence[RerunPlan]) -> str:
    """The dry run's text: exactly which runs, phases, stages and chunks a rerun touches."""
    lines = []
    for p in plans:
        lines.append(f"{p.run_id} (rerun of {p.source})")
        for phase in p.phases:
            ids = p.chunks[phase]
            shown = ", ".join(ids[:12]) + (f", ... ({len(ids)} in all)" if len(ids) > 12 else "")
            lines.append(f"  phase {phase}: {len(ids)} chunk(s): {shown}")
    return "\n".join(lines)
