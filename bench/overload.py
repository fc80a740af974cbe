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

``run_backlog`` offers the same load ahead of time: the window's worth at
``factor`` times the peak is queued first, then the workers start on it, so
the publisher does not share the cores during the window.

``run`` with ``max_queue`` makes the same live case run with bounded stages
(``jobs.max_queue``: both stage queues, declared afresh with the bound). A
message a full queue refuses is offered again after a pause, within the same
pace, as Swarm's publishers wait for room; the refusals are counted, and the
most messages seen ready on each queue (sampled every 20 ms) reported. The
bench's publisher sends up to 5,000 unconfirmed, which a quorum queue takes
past its bound (it applies it once those are in), unlike Swarm's publishers.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import time
from typing import Iterator

from bench import amqp
from bench.measure import CpuMeter, RssSampler, growth, pids_named, rate_between
from bench.site import case_config
from bench.swarm_noop import JOB, QUEUES, done_times, run_id, start_workers
from swarm.envelope import Envelope, encode
from swarm.ledger import Message
from tests.support.site import Site

SETTLE = 5.0  # seconds of the window before throughput and the RSS baseline count
CHECKPOINT = 5000  # messages planned in the ledger at once, ahead of their publishing, as the master does


def offered(site: Site, run: str) -> Iterator[tuple[str, bytes]]:
    """Stage-A messages as the master publishes them, without end: signed, and checkpointed before they go.

    Only planned work runs, so the load is planned in the ledger in batches
    ahead of the publisher, as the master plans a phase before publishing it.
    """
    keys, ledger = site.keys(), site.ledger()
    ledger.open_run(run, JOB, {"date": run.split("=", 1)[1]})
    try:
        for first in itertools.count(0, CHECKPOINT):
            batch = [Envelope(JOB, run, "main", "a", f"o{i:08d}", "0", 1, {}) for i in range(first, first + CHECKPOINT)]
            messages = [Message(env.id, env.stage, env.chunk, encode(env, keys)) for env in batch]
            ledger.save_plan(run, "main", messages)
            for m in messages:
                yield QUEUES[0], m.body
    finally:
        ledger.close()


def run(site: Site, peak_msgs_per_s: float, procs: int, seconds: float, factor: float = 10.0,
        date: str = "2030-03-01", max_queue: int | None = None) -> dict:
    """Offered live: the bench publishes at ``factor`` times the peak chunk rate while the workers run.

    ``max_queue``: every stage queue bounded so (declared afresh, and deleted afterwards).
    """
    name = "overload" if max_queue is None else "overload-bounded"
    config = case_config(site, name, {JOB: {"chunks": 0}}, jobs={"max_queue": max_queue} if max_queue else None)
    if max_queue:
        amqp.delete(site.amqp, QUEUES)  # the workers declare them again, bounded
    workers = start_workers(site, config, procs)
    chunks_per_s = factor * peak_msgs_per_s / 2  # every chunk is two messages of work
    publisher = amqp.ConfirmedPublisher(site.amqp, window=5000, offer_again=bool(max_queue))
    try:
        with _meters(workers, publisher=True) as (rss, cpu), amqp.DepthSampler(site.amqp, QUEUES, every=0.05) as depths:
            started = time.time()
            published = publisher.run(offered(site, run_id(date)), chunks_per_s, seconds)
            ended = started + seconds
        backlog = _purge(site)
    finally:
        site.stop(workers)
        if max_queue:
            amqp.delete(site.amqp, QUEUES)  # unbounded again for any case after this one
    bounded = {"max_queue": max_queue, "most_ready": depths.most, "refused_offers": publisher.refused} \
        if max_queue else {"most_ready": depths.most}
    return _result(site, date, procs, seconds, factor, peak_msgs_per_s, started, ended, backlog, rss, cpu) | {
        "offered_chunks_per_s": published.confirmed / seconds, "target_chunks_per_s": chunks_per_s} | bounded


def run_backlog(site: Site, peak_msgs_per_s: float, procs: int, seconds: float, factor: float = 10.0,
                date: str = "2030-03-02") -> dict:
    """Offered ahead: ``factor`` times what the fleet did at peak in ``seconds`` is queued before it starts.

    The workers then see the same deep queue, with no publisher on the cores
    they share: what an off-host load generator would leave them.
    """
    chunks = int(factor * peak_msgs_per_s / 2 * seconds)
    amqp.ConfirmedPublisher(site.amqp, window=5000).run(itertools.islice(offered(site, run_id(date)), chunks))
    config = case_config(site, "overload-backlog", {JOB: {"chunks": 0}})
    workers = start_workers(site, config, procs)
    try:
        with _meters(workers, publisher=False) as (rss, cpu):
            started = time.time()
            time.sleep(seconds)
            ended = time.time()
        backlog = _purge(site)
    finally:
        site.stop(workers)
    return _result(site, date, procs, seconds, factor, peak_msgs_per_s, started, ended, backlog, rss, cpu) | {
        "queued_chunks": chunks}


@contextlib.contextmanager
def _meters(workers: list, publisher: bool) -> Iterator[tuple[RssSampler, CpuMeter]]:
    groups = {"workers": [w.pid for w in workers]}
    if publisher:
        groups["publisher (bench)"] = [os.getpid()]
    groups |= {"rabbitmq": pids_named("beam.smp"), "mariadb": pids_named("mariadbd")}
    with RssSampler([w.pid for w in workers], every=1.0) as rss, CpuMeter(groups) as cpu:
        yield rss, cpu


def _purge(site: Site) -> int:
    backlog = sum(amqp.depths(site.amqp, QUEUES).values())
    amqp.purge(site.amqp, QUEUES)
    return backlog


def _result(site: Site, date: str, procs: int, seconds: float, factor: float, peak: float, started: float,
            ended: float, backlog: int, rss: RssSampler, cpu: CpuMeter) -> dict:
    rate = rate_between(done_times(site, run_id(date)), started + SETTLE, ended)
    return {
        "procs": procs, "seconds": seconds, "factor": factor, "settle": SETTLE,
        "msgs_per_s": rate, "vs_peak": rate / peak if peak else float("nan"),
        "backlog_at_end": backlog,
        "rss_mib": [[round(t, 1), round(m, 1)] for t, m in rss.samples],
        "rss_growth": growth(rss.samples, SETTLE),
        "cores": cpu.cores,
    }
