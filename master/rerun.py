"""Rerunning a finished night from any stage, as a new generation that reads the ones before it.

A rerun of night R (the id of its first run) is a run of its own,
``R+r<N>``. It runs stage S and every stage after it: the rest of S's
phase that S's messages reach, and the later phases. What those stages write
is the rerun's own generation (``ctx.output_run``). The phases before S's
are not run: they are read from the run of the night that last completed
them (``ctx.input_run``), the phases before that one as that run read them,
so no two generations mix. A rerun from a stage inside a phase starts from
the messages the ledger recorded for that stage (and for the stages it
reaches that got messages from elsewhere) in the run that last completed
the phase.

A rerun holds the night's one-master lock while it works, so it never
overlaps a master of the same night; one cut off resumes when the same
rerun is asked for again. Its result is published only once its own checks
pass (``swarm.publishing``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

from master.coordinator import Master, MasterSettings
from master.planner import plan_phase
from swarm.alerts import Alert, no_alert
from swarm.context import RERUN_MARK
from swarm.envelope import Envelope, decode, encode
from swarm.errors import ConfigError, MasterLocked, RerunLocked, RerunRefused, SwarmError  # noqa: F401 - re-exported
from swarm.ledger import HistoryLedger, Ledger, MasterLedger, Message, MessageState, PhaseState, Run, RunStatus
from swarm.nights import dates_between, param_sets  # noqa: F401 - re-exported: `swarm rerun` names them here
from swarm.signing import SiteKeys, process_keys
from swarm.stage import Job
from swarm.table import TableStore

SHOWN_IDS = 12  # chunk ids a dry run lists per phase before it counts the rest


@dataclasses.dataclass(frozen=True)
class RerunPlan:
    source: str  # the night: the id of its first run
    run_id: str  # the rerun's own id
    from_stage: str
    phases: list[str]  # the phases it runs, the first from ``from_stage``
    chunks: dict[str, list[str]]  # per phase, the chunk ids it runs (the first: after ``--chunks``)
    reads: dict[str, str]  # per phase it does not run, the run whose output of it is read
    replay_from: str | None = None  # a rerun from inside a phase: the run whose recorded messages start it
    chunk_filter: tuple[str, ...] = ()  # --chunks, as asked
    forced: str = ""  # what --force overrode, said in the dry run and kept on the run
    resumed: bool = False  # the plan of a rerun cut off before it finished, resumed

    @property
    def spec(self) -> dict[str, Any]:
        """What the run records of its plan: what a worker, a resumed rerun and the next rerun need."""
        return {"source": self.source, "from_stage": self.from_stage, "phases": self.phases, "reads": self.reads,
                "replay_from": self.replay_from, "chunks": list(self.chunk_filter), "forced": self.forced}


def plan_rerun(job: Job, params: Mapping[str, str], from_stage: str, ledger: Ledger, tables: TableStore,
               chunks: Iterable[str] | None = None, options: dict | None = None, force: bool = False) -> RerunPlan:
    """What a rerun would do; refuses unless the night has finished and what it reads is complete.

    An unfinished rerun of the night from the same stage is resumed rather
    than started again. ``force`` reads a phase that did not complete as it is.
    """
    phase = _phase_of(job, from_stage)
    wanted = tuple(chunks or ())
    if wanted and phase != job.phases[-1]:
        raise ConfigError(f"--chunks: phase {phase} is read as a whole by the phases after it; a rerun of some "
                          f"chunks only is for the last phase, {job.phases[-1]} (rerun {phase} whole instead)")
    source = job.run_id(params)
    lineage = _lineage(ledger, job, source, params)
    resumed = _unfinished_rerun(job, params, lineage, ledger, from_stage, wanted)
    if resumed is not None:
        return _plan(job, resumed.id, resumed.spec, ledger, tables, options, resumed=True)
    index = job.phases.index(phase)
    inside = job.entries[phase] != from_stage
    spec: dict[str, Any] = {"source": source, "from_stage": from_stage, "phases": job.phases[index:], "reads": {},
                            "replay_from": None, "chunks": list(wanted), "forced": ""}
    if inside or index:
        read_phase = phase if inside else job.phases[index - 1]
        base, spec["forced"] = _last_completed(ledger, lineage, read_phase, force)
        spec["reads"] = {q: base.reads.get(q, base.id) for q in job.phases[:index]}
        spec["replay_from"] = base.id if inside else None
    run_id = f"{source}{RERUN_MARK}{_next_number(lineage)}"
    return _plan(job, run_id, spec, ledger, tables, options)


def _plan(job: Job, run_id: str, spec: Mapping[str, Any], ledger: MasterLedger, tables: TableStore,
          options: dict | None, resumed: bool = False) -> RerunPlan:
    phases, wanted = list(spec["phases"]), tuple(spec.get("chunks") or ())
    planned: dict[str, list[str]] = {}
    for phase in phases:
        if phase == phases[0] and spec.get("replay_from"):
            ids = sorted({r.message.chunk for r in frontier(job, spec["from_stage"], spec["replay_from"], ledger)})
        else:
            ids = [m.chunk for m in plan_phase(job, run_id, phase, tables, options, reads=spec["reads"])]
        if phase == phases[0] and wanted:
            unknown = sorted(set(wanted) - set(ids))
            if unknown:
                raise ConfigError(f"--chunks: phase {phase} of {spec['source']} has no chunk(s) {unknown}")
            ids = [c for c in ids if c in wanted]
        planned[phase] = ids
    return RerunPlan(spec["source"], run_id, spec["from_stage"], phases, planned, dict(spec["reads"]),
                     spec.get("replay_from"), wanted, spec.get("forced", ""), resumed)


def _phase_of(job: Job, stage: str) -> str:
    if stage not in job.stages:
        raise ConfigError(f"--from-stage: job {job.name} has no stage {stage!r}; it has {list(job.stages)}")
    return job.stages[stage].phase


def _lineage(ledger: HistoryLedger, job: Job, source: str, params: Mapping[str, str]) -> list[Run]:
    """The night's runs: its first run, then its reruns by number; refuses a night that never ran."""
    first = ledger.get_run(source)
    if first is None:
        raise RerunRefused(f"{source} has never run: start it with `{_master_command(job, params)}` instead")
    reruns = [r for r in ledger.runs(job=job.name, limit=100_000) if r.id.startswith(source + RERUN_MARK)]
    return [first, *sorted((r for r in reruns if _number(r.id) is not None), key=lambda r: _number(r.id) or 0)]


def _number(run_id: str) -> int | None:
    tail = run_id.rsplit(RERUN_MARK, 1)[1]
    return int(tail) if tail.isdigit() else None


def _next_number(lineage: Sequence[Run]) -> int:
    return max((_number(r.id) or 0 for r in lineage[1:]), default=0) + 1


def _unfinished_rerun(job: Job, params: Mapping[str, str], lineage: Sequence[Run], ledger: MasterLedger,
                      from_stage: str, wanted: tuple[str, ...]) -> Run | None:
    """A rerun of the night cut off before it finished, to resume; refusals while the night is not finished."""
    running = [r for r in lineage if r.status == RunStatus.RUNNING]
    if not running:
        return None
    source, latest = lineage[0].id, running[-1]
    try:
        ledger.lock_master(source, "rerun, checking for a master")
    except MasterLocked as exc:
        raise RerunLocked(f"{source} is being run right now by {exc.holder}; rerun it when it has finished") from None
    ledger.unlock_master(source)
    if latest.id == source:
        raise RerunRefused(f"{source} has not finished and no master is running it: finish it first with "
                           f"`{_master_command(job, params)}` (it resumes the run), then rerun it")
    if latest.spec.get("from_stage") != from_stage or tuple(latest.spec.get("chunks") or ()) != wanted:
        asked = latest.spec.get("from_stage")
        raise RerunRefused(f"{latest.id}, a rerun from stage {asked} of chunks {latest.spec.get('chunks') or 'all'}, "
                           f"has not finished: finish it first by asking for it again (--from-stage {asked})")
    return latest


def _last_completed(ledger: MasterLedger, lineage: Sequence[Run], phase: str, force: bool) -> tuple[Run, str]:
    """The night's run that last completed ``phase``; with ``force``, the last to try it. And what was forced."""
    states = [(r, ledger.phase_state(r.id, phase)) for r in lineage]
    done = [r for r, state in states if state == PhaseState.DONE]
    if done:
        return done[-1], ""
    tried = [r for r, state in states if state is not None]
    if not tried:
        raise RerunRefused(f"phase {phase} never ran in any run of {lineage[0].id}: rerun from an earlier stage")
    last = tried[-1]
    unfinished = [r for r in ledger.recorded(last.id, phase) if r.state != MessageState.DONE]
    chunks = sorted({r.message.chunk for r in unfinished})
    states_seen = ", ".join(sorted({r.state.value for r in unfinished}))
    shown = ", ".join(chunks[:SHOWN_IDS]) + (f", ... ({len(chunks)} in all)" if len(chunks) > SHOWN_IDS else "")
    why = (f"phase {phase} did not complete in {last.id}: chunk(s) {shown or 'none recorded'} "
           f"not done ({states_seen or 'no messages'})")
    if not force:
        raise RerunRefused(f"{why}; a rerun reading it would build on partial data. Rerun from an earlier stage, "
                           "or pass --force to read it as it is")
    return last, f"--force: {why}; read as it is"


def reach(job: Job, stage: str) -> set[str]:
    """``stage`` and the stages its messages reach through ``next``."""
    seen, todo = {stage}, [stage]
    while todo:
        for nxt in job.stages[todo.pop()].next:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def frontier(job: Job, from_stage: str, run_id: str, ledger: MasterLedger) -> list[Any]:
    """The messages a rerun from inside a phase starts with: those ``run_id`` recorded for the stages
    ``from_stage`` reaches that no stage among them sent (a root, or a message from an earlier stage)."""
    reached = reach(job, from_stage)
    phase = job.stages[from_stage].phase
    found = [r for r in ledger.recorded(run_id, phase, sorted(reached)) if r.parent_stage not in reached]
    if not found:
        raise RerunRefused(f"{run_id} recorded no message of stage {from_stage} to rerun from")
    return found


def replayed_roots(job: Job, plan: RerunPlan, ledger: MasterLedger, keys: SiteKeys) -> list[Message]:
    """The frontier's messages made the rerun's own: the same stage, chunk, sequence and payload, signed anew."""
    assert plan.replay_from is not None
    messages = []
    for rec in frontier(job, plan.from_stage, plan.replay_from, ledger):
        try:
            old = decode(rec.message.body, keys)
        except SwarmError as exc:
            raise RerunRefused(f"recorded message {rec.message.id} cannot be replayed: {exc}") from None
        env = Envelope(job.name, plan.run_id, old.phase, old.stage, old.chunk, old.seq, 1, dict(old.payload))
        messages.append(Message(env.id, env.stage, env.chunk, encode(env, keys)))
    return messages


def run_rerun(plan: RerunPlan, job: Job, params: dict, broker, ledger: MasterLedger, tables: TableStore,
              settings: MasterSettings | None = None, progress: Callable | None = None,
              keys: SiteKeys | None = None, alert: Alert = no_alert) -> Run:
    """Carry out a planned rerun; ``MasterLocked`` becomes a refusal naming the holder."""
    keys = keys or process_keys()
    roots = (lambda: replayed_roots(job, plan, ledger, keys)) if plan.replay_from else None
    try:
        return Master(job, params, broker, ledger, tables, settings, progress, run_id=plan.run_id,
                      phases=plan.phases, chunks=plan.chunks[plan.phases[0]], lock_key=plan.source, keys=keys,
                      spec=plan.spec, roots=roots, alert=alert).run()
    except MasterLocked as exc:
        raise RerunLocked(f"{plan.source} is being run right now by {exc.holder}; rerun it when it has finished") \
            from None


def _master_command(job: Job, params: Mapping[str, str]) -> str:
    args = [f"--date {v}" if k == "date" else f"--param {k}={v}" for k, v in params.items()]
    return " ".join(["swarm master", job.name, *args])


def describe(plans: Sequence[RerunPlan], job: Job) -> str:
    """The dry run's text: which runs, stages and chunks a rerun runs, and which generation each phase reads."""
    lines = []
    for p in plans:
        verb = "resumes" if p.resumed else "reruns"
        lines.append(f"{p.run_id} ({verb} {p.source} from stage {p.from_stage})")
        for phase in job.phases[:job.phases.index(p.phases[0])]:
            lines.append(f"  phase {phase}: not run; its output is read from {p.reads[phase]}")
        for position, phase in enumerate(p.phases):
            ids = p.chunks[phase]
            shown = ", ".join(ids[:SHOWN_IDS]) + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN_IDS else "")
            if phase == p.phases[0] and p.replay_from:
                stages = ", ".join(sorted(reach(job, p.from_stage)))
                how = f"stage(s) {stages}, from the messages {p.replay_from} recorded"
            else:
                how = "all its stages"
            reads = p.run_id if position else _reads_of(job, p, phase)
            lines.append(f"  phase {phase}: {how}; {len(ids)} chunk(s): {shown}")
            lines.append(f"    reads {reads}; writes generation {p.run_id}")
        if p.forced:
            lines.append(f"  {p.forced}")
    return "\n".join(lines)


def _reads_of(job: Job, plan: RerunPlan, phase: str) -> str:
    index = job.phases.index(phase)
    if index == 0:
        return "the source tables"
    return plan.reads.get(job.phases[index - 1], plan.run_id)
