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
# broker round trips, yet more than 8 measured slower, not faster: with one
# ledger transaction per claim and per complete, more threads only add
# contention for the GIL and for MariaDB's CPU (see bench/README.md).
POOL = 8

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
