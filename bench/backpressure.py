"""Case 8: a fast stage feeding a stage ten times slower, with a bounded queue between them.

The job is ``tests.support.pacedjob``: ``produce`` sleeps ``produce_sleep`` a
message and sends one to ``consume``, which sleeps ten times as long on a
fixed pool of ``CONSUME_POOL`` threads; ``consume``'s queue holds at most
``BOUND`` (``max_queue``). ``swarm master`` publishes the chunks a window at
a time (``master.window``, its default) and ``procs`` worker processes serve
both stages, on the same cores as RabbitMQ and MariaDB.

``consume``'s capacity is measured first, by the same run of the job with
``consume``'s queue unbounded (``paced_unbounded``): the producer fills it
and ``consume`` never waits for work. Then the bounded run. Measured:

- throughput: ``consume``'s messages done a second over the steady window
  (5 % to 95 % of them, from the ledger's ``updated_at``), bounded, as a
  fraction of its capacity (unbounded); and of what its sleeping threads
  could do at most, ``procs x CONSUME_POOL / consume_sleep``;
- the most messages seen ready on ``consume``'s queue, sampled every 20 ms
  on a connection of the bench's own, against its bound (and on
  ``produce``'s, against the master's window), and how often it was empty;
- the workers' RSS, summed, at the start and at the end of the bounded run;
- whether a resource alarm blocked a publisher: the processes log it.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from bench import amqp
from bench.measure import RssSampler, steady_rate
from bench.site import case_config
from swarm.broker import stage_queue
from swarm.ledger import MessageState
from tests.support.pacedjob import BOUND, CONSUME_POOL
from tests.support.site import Site

BOUNDED, UNBOUNDED = "paced", "paced_unbounded"
BLOCKED = "blocks publishing"  # what a process logs when a resource alarm blocks its publishing connection


def queues(job: str) -> list[str]:
    return [stage_queue(job, "produce"), stage_queue(job, "consume")]


def run(site: Site, chunks: int, procs: int, consume_sleep: float = 0.02, slower: float = 10.0,
        date: str = "2030-05-01") -> dict:
    options = {"chunks": chunks, "consume_sleep": consume_sleep, "produce_sleep": consume_sleep / slower}
    config = case_config(site, "backpressure", {job: options for job in (BOUNDED, UNBOUNDED)},
                         jobs={"modules": ["tests.support.pacedjob", "tests.support.pacedjob:unbounded"]})
    free = _one(site, config, UNBOUNDED, chunks, procs, consume_sleep, date)
    bounded = _one(site, config, BOUNDED, chunks, procs, consume_sleep, date)
    most = bounded["most_ready"]
    return {
        "chunks": chunks, "procs": procs, "consume_sleep": consume_sleep, "slower": slower,
        "consume_msgs_per_s": bounded["rate"], "consume_capacity": free["rate"],
        "vs_capacity": bounded["rate"] / free["rate"] if free["rate"] else float("nan"),
        "sleep_capacity": procs * CONSUME_POOL / consume_sleep,
        "max_queue": BOUND, "most_ready": most[1], "most_ready_produce": most[0],
        "empty_share": bounded["empty_share"], "unbounded_most_ready": free["most_ready"][1],
        "rss_start_mib": bounded["rss_start_mib"], "rss_end_mib": bounded["rss_end_mib"],
        "alarm": bounded["alarm"] or free["alarm"],
    }


def _one(site: Site, config: Path, job: str, chunks: int, procs: int, consume_sleep: float, date: str) -> dict:
    """One run of ``job`` to its end: consume's steady rate, the queues' depths, RSS, alarms."""
    master = site.swarm(config, "master", job, "--date", date)
    workers = [site.swarm(config, "worker", "--job", job) for _ in range(procs)]
    try:
        amqp.wait_consumers(site.amqp, queues(job), procs)
        with RssSampler([w.pid for w in workers], every=1.0) as rss, \
                amqp.DepthSampler(site.amqp, queues(job)) as depths:
            try:
                master.wait(timeout=max(600.0, 5 * chunks * consume_sleep / (procs * CONSUME_POOL)))
            except subprocess.TimeoutExpired:
                master.kill()
                raise RuntimeError(f"the {job} run did not finish:\n{site.log_tail(master)}") from None
        if master.returncode != 0:
            raise RuntimeError(f"the master exited with {master.returncode}:\n{site.log_tail(master)}")
    finally:
        site.stop(workers)
    rows = site.query("SELECT updated_at FROM swarm_messages WHERE run_id = %s AND state = %s AND stage = %s",
                      (f"{job}@date={date}", MessageState.DONE, "consume"))
    consume = queues(job)[1]
    return {
        "rate": steady_rate([float(t) for (t,) in rows], procs=procs).msgs_per_s,
        "most_ready": [depths.most[q] for q in queues(job)],
        "empty_share": depths.empty[consume] / max(1, depths.samples),
        "rss_start_mib": rss.samples[0][1] if rss.samples else None,
        "rss_end_mib": rss.samples[-1][1] if rss.samples else None,
        "alarm": any(BLOCKED in site.log_of(p).read_text(errors="replace") for p in [master, *workers]),
    }
