"""``swarm worker`` with two timestamps per message, for the handler-to-ack latency.

Run as ``python -m bench.probe --config FILE worker --job noop_pipeline``:
the same worker process, with the noop job's handlers wrapped to note when
each returns, and the RabbitMQ consumers' settle wrapped to note when a
delivery's ``basic_ack`` is written on the I/O thread. Both use this process's
monotonic clock; they cost a dict store and a list append per message.
At exit the notes go to ``$BENCH_TRACE_DIR/<pid>.json`` as
``{message id: [handler returned, ack written]}``.
"""
from __future__ import annotations

import atexit
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from swarm.brokers.rabbitmq.consuming import ConsumerChannels
from swarm.envelope import peek
from workers.jobs import noop_pipeline

_returned: dict[str, float] = {}
_acked: list[tuple[bytes, float]] = []


def _timed(handler):
    def timed(ctx, msg):
        try:
            return handler(ctx, msg)
        finally:
            _returned[msg.id] = time.monotonic()

    return timed


def _install() -> None:
    for name, stage in list(noop_pipeline.job.stages.items()):
        noop_pipeline.job.stages[name] = dataclasses.replace(stage, handler=_timed(stage.handler))
    settle = ConsumerChannels.settle

    def timed_settle(self, deliveries):
        deliveries = list(deliveries)
        settle(self, deliveries)
        written = time.monotonic()
        _acked.extend((d.body, written) for d in deliveries)

    ConsumerChannels.settle = timed_settle
    atexit.register(_dump)


def _dump() -> None:
    pairs = {}
    for body, at in _acked:
        msg_id = peek(body).id  # written by this process: no need to check its signature again
        if msg_id in _returned:
            pairs[msg_id] = [_returned[msg_id], at]
    out = Path(os.environ["BENCH_TRACE_DIR"]) / f"{os.getpid()}.json"
    out.write_text(json.dumps(pairs))


if __name__ == "__main__":
    from swarm.cli import main

    _install()
    sys.exit(main())
