"""A two-stage job that does no work: what is left is the framework's own cost per message.

Phase ``main``: the planner yields ``options.chunks`` chunks (default 1000);
stage ``a`` forwards each chunk to stage ``b`` with one ``Send``; ``b``
returns nothing. Every message still goes the whole way: decode, ledger
claim, handler, confirmed publish of the child, ledger complete, ack.
``bench/`` runs it to measure throughput, latency and the master's publish.
"""
from __future__ import annotations

from typing import Iterable

from swarm import Chunk, Job, Send

# Each stage: up to POOL threads, each taking up to BATCH waiting deliveries at
# once (one grouped claim, the handlers, one confirmed publish, one grouped
# complete, the acks). With handlers this cheap the worker's Python is the
# limit, so a few threads with big batches beat many threads with small ones
# (bench/README.md has the measurements); prefetch is POOL x BATCH.
POOL = 4
BATCH = 64

job = Job("noop_pipeline", params=("date",), description=__doc__.splitlines()[0])


@job.planner("main")
def plan(ctx) -> Iterable[Chunk]:
    for i in range(int(ctx.options.get("chunks", 1000))):
        yield Chunk(f"c{i:07d}", {})


@job.stage("a", phase="main", pool=POOL, batch=BATCH, timeout=5, next=("b",))
def forward(ctx, msg):
    return Send("b", {})


@job.stage("b", phase="main", pool=POOL, batch=BATCH, timeout=5)
def finish(ctx, msg):
    return None
