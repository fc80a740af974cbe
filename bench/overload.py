"""Case 5: ten times the fleet's capacity offered for a fixed time.

With the noop workers subscribed, the bench publishes stage-A messages
(confirmed, persistent) at ``factor`` times the chunk rate the same fleet
reached in case 2, for ``seconds``. Throughput is the ledger's done count
within the window (after the first ``settle`` seconds) over its length,
relative to that peak; the workers' RSS is sampled every second. Flat RSS
means the backlog waits in RabbitMQ, not in the workers. Afterwards the
backlog is purged and the workers stopped. The publisher runs on the same
cores as the workers, the broker and the database: the offered rate and the
cores each of them used in the window are reported too.
"""
from __future__ import annotations

import itertools
import os
import time
from typing import Iterator

from bench import amqp
from bench.measure import CpuMeter, RssSampler, growth, pids_named, rate_between
from bench.site import Site
from bench.swarm_noop import JOB, QUEUES, done_times, run_id, start_workers
from swarm.envelope import Envelope, encode

SETTLE = 5.0  # seconds of the window before throughput and the RSS baseline count


def offered(run: str) -> Iterator[tuple[str, bytes]]:
    """Stage-A messages as the master would publish them, without end."""
    for i in itertools.count():
        yield QUEUES[0], encode(Envelope(JOB, run, "main", "a", f"o{i:08d}", "0", 1, {}))


def run(site: Site, peak_msgs_per_s: float, procs: int, seconds: float, factor: float = 10.0,
        date: str = "2030-03-01") -> dict:
    config = site.config("overload", {JOB: {"chunks": 0}})
    workers = start_workers(site, config, procs)
    chunks_per_s = factor * peak_msgs_per_s / 2  # every chunk is two messages of work
    try:
        groups = {"workers": [w.pid for w in workers], "publisher (bench)": [os.getpid()],
                  "rabbitmq": pids_named("beam.smp"), "mariadb": pids_named("mariadbd")}
        with RssSampler([w.pid for w in workers], every=1.0) as rss, CpuMeter(groups) as cpu:
            started = time.time()
            published = amqp.ConfirmedPublisher(site.amqp, window=5000).run(offered(run_id(date)), chunks_per_s,
                                                                           seconds)
            ended = started + seconds
        backlog = sum(amqp.depths(site.amqp, QUEUES).values())
        amqp.purge(site.amqp, QUEUES)
    finally:
        site.stop(workers)
    done = done_times(site, run_id(date))
    rate = rate_between(done, started + SETTLE, ended)
    return {
        "procs": procs, "seconds": seconds, "factor": factor, "settle": SETTLE,
        "offered_chunks_per_s": published.confirmed / seconds, "target_chunks_per_s": chunks_per_s,
        "msgs_per_s": rate, "vs_peak": rate / peak_msgs_per_s if peak_msgs_per_s else float("nan"),
        "backlog_at_end": backlog,
        "rss_mib": [[round(t, 1), round(m, 1)] for t, m in rss.samples],
        "rss_growth": growth(rss.samples, SETTLE),
        "cores": cpu.cores,
    }
