"""A two-stage job at a pace of its own, for bounded stages: ``produce`` feeds ``consume``, whose queue is bounded.

Phase ``main`` has ``options.chunks`` chunks (default 100). ``produce``
sleeps ``options.produce_sleep`` seconds (default 0) a message and sends one
message to ``consume``, which sleeps ``options.consume_sleep`` seconds
(default 0) and counts it. ``consume``'s queue holds at most ``BOUND``
messages; it runs on a fixed pool of ``CONSUME_POOL`` threads, so its
capacity is at most ``CONSUME_POOL / consume_sleep`` messages a second per
worker process. ``unbounded`` is the same job with ``consume``'s queue
unbounded, as ``paced_unbounded``. The integration tests
(``tests/integration/test_backpressure.py``) and the bench
(``bench/backpressure.py``) run them.
"""
from __future__ import annotations

import time
from typing import Iterable

from swarm import Chunk, Count, Job, Send

BOUND = 100
PRODUCE_POOL, PRODUCE_BATCH = 4, 4
CONSUME_POOL = 4


def plan(ctx) -> Iterable[Chunk]:
    for i in range(int(ctx.options.get("chunks", 100))):
        yield Chunk(f"c{i:06d}", {})


def produce(ctx, msg):
    time.sleep(float(ctx.options.get("produce_sleep", 0)))
    return [Send("consume", {}), Count("produced")]


def consume(ctx, msg):
    time.sleep(float(ctx.options.get("consume_sleep", 0)))
    return Count("consumed")


def paced(name: str, bound: int | None) -> Job:
    """The job, named ``name``, with ``consume``'s queue bounded at ``bound`` (None: unbounded)."""
    made = Job(name, params=("date",), description=__doc__.splitlines()[0])
    made.planner("main")(plan)
    made.stage("produce", phase="main", pool=PRODUCE_POOL, batch=PRODUCE_BATCH, timeout=60, next=("consume",))(
        produce)
    made.stage("consume", phase="main", pool=CONSUME_POOL, pool_min=CONSUME_POOL, timeout=60, max_queue=bound)(
        consume)
    return made


job = paced("paced", BOUND)
unbounded = paced("paced_unbounded", None)  # ``tests.support.pacedjob:unbounded``: consume's capacity, measured
