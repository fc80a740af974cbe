"""Testing handlers, planners and whole jobs in-process, with no server.

    from swarm.testing import call, fake_tables, plan, run_job

    assert call(double, {"n": 2}) == [Send("next", {"n": 4})]

``call`` checks a handler's effects exactly as a worker does: puts are
normalised and must go to the job's declared tables and families, sends must
go to a stage in the handler's ``next`` and encode as a message. Puts compare
by the bytes they write, so ``{"d:n": 2} == {"d:n": "2"}``.
"""
from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Mapping

from swarm.context import Context, PlanContext, ReadTables, params_of
from swarm.effects import EFFECT_TYPES, Effect, Effects, Put
from swarm.envelope import Envelope, peek
from swarm.errors import ConfigError, PluginError
from swarm.ledger import DeadLetterRecord, Ledger, Message, Run
from swarm.signing import process_keys
from swarm.slices import SplitSettings, next_slice, slice_message
from swarm.stage import Chunk, Job, Stage, stage_of
from swarm.table import TableStore
from swarm.tables.embedded import EmbeddedTables

DEFAULT_DATE = "2026-01-01"


def call(
    handler: Callable[[Context, Envelope], Any],
    payload: Mapping[str, Any] | None = None,
    *,
    tables: TableStore | None = None,
    params: Mapping[str, str] | None = None,
    run: str | None = None,
    chunk: str = "c0",
    attempt: int = 1,
    options: Mapping[str, Any] | None = None,
    stage: str | None = None,
    phase: str | None = None,
    reads: Mapping[str, str] | None = None,
    slice: str = "0",
) -> list[Effect]:
    """Call ``handler`` once as a worker would; return its effects as a list, checked as a worker checks them.

    The job and stage are those that declared ``handler``. ``params`` (default:
    each of the job's params, ``date`` as 2026-01-01) make the run id, unless
    ``run`` gives it. A handler no job declared runs as stage ``stage`` of a
    job named after ``run``; its sends are then not checked against a stage.
    ``slice``: the message's ``ctx.slice`` (its seq). None items the handler
    returns (a ``slice_of`` rest when nothing is left) are left out.
    """
    job, declared = _owner(handler, stage, phase)
    run = run or _run_id(job, params)
    env = Envelope(job.name, run, declared.phase, declared.name, chunk, slice, attempt, dict(payload or {}))
    ctx = Context(job.name, run, ReadTables(tables or EmbeddedTables()), params_of(run), dict(options or {}),
                  declared.phase, job.phases or [declared.phase], dict(reads or {}), slice=slice)
    returned = handler(ctx, env)
    effects = Effects.collect(returned, job.tables or None)  # PluginError, as a worker's abort would say
    if declared.handler is handler:
        from swarm.runtime import child_message  # the very check a worker makes

        for index, send in enumerate(effects.sends):
            child_message(env, declared, index, send, process_keys())
        if effects.continued is not None:
            slice_message(env, declared, next_slice(slice), effects.continued.payload, process_keys())
    return _as_list(returned)


def _owner(handler: Callable[..., Any], stage: str | None, phase: str | None) -> tuple[Job, Stage]:
    found = stage_of(handler)
    if found is not None:
        return found
    job = Job("test", params=("date",))
    return job, Stage(stage or "stage", handler, phase or "main")


def _run_id(job: Job, params: Mapping[str, str] | None) -> str:
    given = dict(params or {})
    values = {p: given.get(p, DEFAULT_DATE if p == "date" else "test") for p in job.params}
    return job.run_id(values)


def _as_list(returned: Any) -> list[Effect]:
    if returned is None:
        return []
    if isinstance(returned, EFFECT_TYPES) or not isinstance(returned, Iterable):
        return [returned]
    return [effect for effect in returned if effect is not None]


def fake_tables(rows: Mapping[str, Mapping[Any, Mapping[Any, Any]]] | None = None,
                job: Job | None = None) -> EmbeddedTables:
    """An in-memory table store: ``job``'s declared tables, and ``{table: {row key: {"family:q": value}}}``.

    A table in ``rows`` that the job does not declare is made with the
    families its cells name.
    """
    store = EmbeddedTables()
    for spec in (job.tables.values() if job else ()):
        store.create_table(spec.name, spec.families, spec.splits)
    for table, content in (rows or {}).items():
        if table not in store.tables():
            families = {str(c if isinstance(c, str) else c.decode()).split(":", 1)[0]
                        for cells in content.values() for c in cells}
            store.create_table(table, sorted(families) or ["f"])
        store.apply([Put(table, key, cells) for key, cells in content.items()])
    return store


def plan(job: Job, phase: str | None = None, *, tables: TableStore | None = None,
         params: Mapping[str, str] | None = None, options: Mapping[str, Any] | None = None) -> list[Chunk]:
    """The chunks ``job``'s planner makes for ``phase`` (default: the first) over ``tables``."""
    phase = phase or job.phases[0]
    if phase not in job.planners:
        raise PluginError(f"job {job.name}: phase {phase!r} has no planner; phases: {job.phases}")
    run = _run_id(job, params)
    ctx = PlanContext(job.name, run, ReadTables(tables or EmbeddedTables()), params_of(run), dict(options or {}),
                      phase, job.phases)
    chunks = list(job.planners[phase](ctx))
    bad = [c for c in chunks if not isinstance(c, Chunk)]
    if bad:
        raise PluginError(f"job {job.name}: planner of phase {phase} yielded {bad[0]!r}, not a Chunk")
    return chunks


def replay(job: Job, recorded: bytes | Message | DeadLetterRecord, *, tables: TableStore | None = None,
           options: Mapping[str, Any] | None = None, attempt: int = 1) -> list[Effect]:
    """Run a recorded message (a body, a ledger message or a dead letter) through its handler, in-process.

    For debugging a failure with the tables it read: nothing is written and
    nothing published; the effects are returned. The signature is not
    checked: this runs on a trusted operator's machine, on a body they chose.
    """
    body = recorded.body if isinstance(recorded, (Message, DeadLetterRecord)) else recorded
    env = peek(bytes(body))
    if env is None:
        raise ConfigError("the recorded body does not decode as an envelope")
    stage = job.stages.get(env.stage)
    if env.job != job.name or stage is None:
        raise ConfigError(f"the recorded message is for {env.job}/{env.stage}, not a stage of job {job.name}")
    return call(stage.handler, env.payload, tables=tables, run=env.run, chunk=env.chunk, attempt=attempt,
                options=options)


def run_job(
    job: Job,
    params: Mapping[str, str],
    tables: TableStore,
    ledger: Ledger | None = None,
    workers: int = 2,
    options: Mapping[str, Any] | None = None,
    hub_name: str | None = None,
    split: SplitSettings | None = None,
    **worker_args: Any,
) -> Run:
    """Run ``job`` to the end in this process (master, ``workers`` worker threads, in-process broker); the run.

    ``ledger`` defaults to an in-memory SQLite ledger; the run (done or
    failed, with its error) is returned, as ``swarm run`` would end it.
    ``split``: straggler splitting, for the master and the workers (``swarm.slices``; off by default).
    """
    from swarm.brokers.memory import MemoryBroker, hub
    from swarm.ledgers.sqlite import SqliteLedger
    from swarm.local import local_fleet, master_for

    memory = hub(hub_name or f"test-{uuid.uuid4().hex}")
    ledger = ledger or SqliteLedger()
    with local_fleet(job, lambda: MemoryBroker(memory), ledger, tables, workers, options=dict(options or {}),
                     split=split, **worker_args):
        run: Run = master_for(job, params, MemoryBroker(memory), ledger, tables, dict(options or {}),
                              split=split).run()
    return run
