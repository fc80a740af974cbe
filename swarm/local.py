"""Workers as threads in this process, for the demo and tests on the in-process broker."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

from swarm.broker import Broker
from swarm.ledger import MasterLedger, WorkerLedger
from swarm.roles import role
from swarm.slices import SplitSettings
from swarm.stage import Job
from swarm.table import TableStore


def master_for(job: Job, params, broker: Broker, ledger: MasterLedger, tables: TableStore, options: dict | None = None,
               poll: float = 0.05, lost_after: float = 120.0, deadline: str | None = None, fresh_broker: bool = True,
               patience: float = 900.0, split: SplitSettings | None = None, **master_args):
    """A master for ``job`` in this process, polling often: workers here finish fast.

    ``fresh_broker``: the broker is new with this process (in-process), so
    a resumed run's queued messages are on no queue yet. ``split``: ``[split]``.
    """
    master, master_settings = role("master"), role("master_settings")  # beside the library, not inside it

    settings = master_settings(poll=poll, lost_after=lost_after, deadline=deadline, options=dict(options or {}),
                               fresh_broker=fresh_broker, patience=patience, split=split or SplitSettings())
    return master(job, params, broker, ledger, tables, settings, **master_args)


@contextlib.contextmanager
def local_fleet(
    job: Job,
    connect: Callable[[], Broker],
    ledger: WorkerLedger,
    tables: TableStore,
    workers: int = 2,
    **worker_args,
) -> Iterator[list]:
    """Run ``workers`` workers, each with its own broker connection, until the block exits."""
    worker = role("worker")  # the worker process lives beside the library, not inside it
    stop = threading.Event()
    fleet = [worker(job, connect(), ledger, tables, holder=f"local-{i}", **worker_args) for i in range(workers)]
    threads = [threading.Thread(target=w.run, args=(stop,), name=f"swarm-worker-{i}", daemon=True)
               for i, w in enumerate(fleet)]
    for t in threads:
        t.start()
    try:
        yield fleet
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
