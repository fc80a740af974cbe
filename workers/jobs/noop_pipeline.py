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

# Threads per stage (and so prefetch). The threads mostly wait on ledger and
# broker round trips; the MySQL ledger commits the claims and completes of
# threads waiting at the same time together, so more threads mean bigger
# groups, up to the point where the GIL and MariaDB's CPU are the limit.
POOL = 16

job = Job("noop_pipeline", params=("date",), description=__doc__.splitlines()[0])


@job.planner("main")
def plan(ctx) -> Iterable[Chunk]:
    for i in range(int(ctx.options.get("chunks", 1000))):
        yield Chunk(f"c{i:07d}", {})


@job.stage("a", phase="main", pool=POOL, next=("b",))
def forward(ctx, msg):
    return Send("b", {})


@job.stage("b", phase="main", pool=POOL)
def finish(ctx, msg):
    return None
