"""Case 6: the master on a big plan: ``chunks`` chunks of the noop job, and a resume after SIGKILL.

No worker runs, so the clock is only the master's: ``swarm master`` started
-> run opened (process start, lock) -> phase planned (planner, envelopes,
the checkpoint transaction) -> phase published (every chunk confirmed by
RabbitMQ and marked queued, i.e. the master enters its watch). Polled from
the ledger every 20 ms. Then a second run is killed with SIGKILL once
``kill_at`` of its chunks are queued, and a new master resumes it: the time
from its start to the phase published, with what is on the queue then
(every chunk at least once; a batch in flight at the kill goes out twice).
"""
from __future__ import annotations

import signal
import subprocess
import time

from bench import amqp
from bench.site import case_config
from bench.swarm_noop import JOB, QUEUES, run_id
from swarm.ledger import MessageState, PhaseState
from tests.support.site import Site
from tests.support.waiting import wait_until

POLL = 0.02


class Watch:
    """The ledger as the bench polls it for one run."""

    def __init__(self, site: Site, date: str):
        self.ledger, self.run = site.ledger(), run_id(date)

    def phase(self) -> str | None:
        return self.ledger.phase_state(self.run, "main")

    def queued(self) -> int:
        return self.ledger.counts(self.run, "main").get(MessageState.QUEUED, 0)

    def opened(self) -> bool:
        return self.ledger.get_run(self.run) is not None

    def close(self) -> None:
        self.ledger.close()


def _until(watch_fn, master: subprocess.Popen, what: str, timeout: float) -> float:
    """Monotonic time ``watch_fn()`` held, or an error if the master died first."""
    wait_until(lambda: master.poll() is not None or watch_fn(), what, timeout, every=POLL)
    at = time.monotonic()
    if master.poll() is not None:
        raise RuntimeError(f"the master exited with {master.returncode} before {what}")
    return at


def _end(site: Site, master: subprocess.Popen) -> None:
    master.kill()
    master.wait()
    amqp.purge(site.amqp, QUEUES)


def full(site: Site, config, date: str, timeout: float) -> dict:
    watch = Watch(site, date)
    try:
        started = time.monotonic()
        master = site.swarm(config, "master", JOB, "--date", date)
        opened = _until(watch.opened, master, "the run opened", timeout)
        planned = _until(lambda: watch.phase() in (PhaseState.PLANNED, PhaseState.PUBLISHED), master, "the plan",
                         timeout)
        published = _until(lambda: watch.phase() == PhaseState.PUBLISHED, master, "the publish", timeout)
        _end(site, master)
    finally:
        watch.close()
    return {"start_seconds": opened - started, "plan_seconds": planned - opened,
            "publish_seconds": published - planned, "total_seconds": published - started}


def resume(site: Site, config, date: str, chunks: int, kill_at: float, timeout: float) -> dict:
    watch = Watch(site, date)
    try:
        first = site.swarm(config, "master", JOB, "--date", date)
        _until(lambda: watch.queued() >= kill_at * chunks, first, "half the chunks queued", timeout)
        first.send_signal(signal.SIGKILL)
        first.wait()
        queued_at_kill = watch.queued()
        started = time.monotonic()
        second = site.swarm(config, "master", JOB, "--date", date)
        published = _until(lambda: watch.phase() == PhaseState.PUBLISHED, second, "the resumed publish", timeout)
        on_queue = amqp.depths(site.amqp, QUEUES[:1])[QUEUES[0]]
        _end(site, second)
    finally:
        watch.close()
    return {"queued_at_kill": queued_at_kill, "resume_seconds": published - started,
            "on_queue": on_queue, "republished": on_queue - chunks}


def run(site: Site, chunks: int, kill_at: float = 0.5, timeout: float = 600) -> dict:
    # window 0: the whole phase at once, as no worker takes any of it (the time measured is the master's own)
    config = case_config(site, "master", {JOB: {"chunks": chunks}}, master={"window": 0})
    return {"chunks": chunks, **full(site, config, "2030-04-01", timeout),
            "resume": resume(site, config, "2030-04-02", chunks, kill_at, timeout)}
