"""Testing handlers and jobs in-process, with no server.

    from swarm.testing import call
    assert call(double, {"n": 2}) == [Send("next", {"n": 4})]
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from swarm.context import Context, ReadTables, params_of
from swarm.effects import EFFECT_TYPES
from swarm.envelope import Envelope
from swarm.stage import Job
from swarm.table import TableStore
from swarm.tables.embedded import EmbeddedTables


def call(
    handler: Callable[[Context, Envelope], Any],
    payload: Mapping[str, Any] | None = None,
    *,
    tables: TableStore | None = None,
    run: str = "test@date=2026-01-01",
    stage: str = "stage",
    chunk: str = "c0",
    phase: str = "main",
    options: Mapping[str, Any] | None = None,
) -> list:
    """Call ``handler`` once as a worker would; return its effects as a list."""
    env = Envelope(run.split("@", 1)[0], run, phase, stage, chunk, "0", 1, dict(payload or {}))
    ctx = Context(env.job, run, ReadTables(tables or EmbeddedTables()), params_of(run), dict(options or {}))
    returned = handler(ctx, env)
    if returned is None:
        return []
    if isinstance(returned, EFFECT_TYPES):
        return [returned]
    return list(returned)


def run_job(
    job: Job,
    params: Mapping[str, str],
    tables: TableStore,
    ledger=None,
    workers: int = 2,
    options: Mapping[str, Any] | None = None,
    hub_name: str | None = None,
    **worker_args,
):
    """Run ``job`` to the end on the in-process broker with ``workers`` worker threads; return the run."""
    import uuid

    from master.coordinator import Master, MasterSettings
    from swarm.brokers.memory import MemoryBroker, hub
    from swarm.ledgers.sqlite import SqliteLedger
    from swarm.local import local_fleet

    memory = hub(hub_name or f"test-{uuid.uuid4().hex}")
    ledger = ledger or SqliteLedger()
    settings = MasterSettings(poll=0.05, options=dict(options or {}))
    with local_fleet(job, lambda: MemoryBroker(memory), ledger, tables, workers, options=dict(options or {}),
                     **worker_args):
        return Master(job, params, MemoryBroker(memory), ledger, tables, settings).run()
