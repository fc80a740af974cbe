"""Turning a phase's planner output into the root messages the master checkpoints."""
from __future__ import annotations

from typing import Mapping

from swarm.context import PlanContext, ReadTables, params_of
from swarm.envelope import Envelope, encode
from swarm.errors import PluginError
from swarm.ledger import Message
from swarm.signing import SiteKeys, process_keys
from swarm.stage import Chunk, Job
from swarm.table import TableStore


def plan_phase(job: Job, run_id: str, phase: str, tables: TableStore, options: dict | None = None,
               keys: SiteKeys | None = None, reads: Mapping[str, str] | None = None) -> list[Message]:
    """Call the job's planner for ``phase``; one root message per chunk, for the phase's entry stage, signed.

    ``reads``: a rerun's generations (``Run.reads``), for a planner that reads an earlier phase's output.
    """
    keys = keys or process_keys()
    ctx = PlanContext(job.name, run_id, ReadTables(tables), params_of(run_id), options or {}, phase, job.phases,
                      dict(reads or {}))
    entry = job.entries[phase]
    messages, seen = [], set()
    for chunk in job.planners[phase](ctx):
        if not isinstance(chunk, Chunk):
            raise PluginError(f"job {job.name}: planner of phase {phase} yielded {chunk!r}, not a Chunk")
        if chunk.id in seen:
            raise PluginError(f"job {job.name}: planner of phase {phase} yielded chunk id {chunk.id!r} twice")
        seen.add(chunk.id)
        env = Envelope(job.name, run_id, phase, entry, chunk.id, "0", 1, dict(chunk.payload))
        messages.append(Message(env.id, entry, chunk.id, encode(env, keys)))
    return messages
