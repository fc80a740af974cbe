"""Case 3: Celery on the same RabbitMQ: ``chain(a.s(i), b.s())``, acks_late, publisher confirms.

The chains are published first; then one ``celery worker`` (prefork,
``concurrency`` children) consumes both queues. Celery keeps no ledger, so
progress is read from the queues: sampled every 50 ms, a message still on A
has two deliveries to go and one on B has one, so done = 2N - 2*A - B
(the few prefetched and in flight count as done a few ms early).
"""
from __future__ import annotations

import time

from celery import chain

from bench import amqp
from bench.celery_app import QUEUE_A, QUEUE_B, a, app, b
from bench.measure import children, peak_rss_mib, steady_rate
from tests.support.site import Site

QUEUES = [QUEUE_A, QUEUE_B]


def preload(url: str, chains: int) -> None:
    """Declare the queues and publish ``chains`` chains with Celery's own client, confirmed."""
    app.conf.broker_url = url
    with app.connection_for_write() as conn:
        for queue in app.conf.task_queues:
            queue(conn.default_channel).declare()
        amqp.purge(url, QUEUES)
        with app.producer_or_acquire() as producer:
            for i in range(chains):
                chain(a.s(i), b.s()).apply_async(producer=producer)


def sample_done(url: str, chains: int, timeout: float, every: float = 0.05) -> list[tuple[float, int]]:
    """(time, messages done) until both queues are empty."""
    samples = []
    deadline = time.monotonic() + timeout
    with amqp.channel(url) as ch:
        while time.monotonic() < deadline:
            ready = {q: ch.queue_declare(q, passive=True).method.message_count for q in QUEUES}
            done = 2 * chains - 2 * ready[QUEUE_A] - ready[QUEUE_B]
            if not any(ready.values()):
                return samples + [(time.monotonic(), 2 * chains)]  # the few still in hand finish now
            samples.append((time.monotonic(), done))
            time.sleep(every)
    raise TimeoutError(f"Celery did not finish {chains} chains in {timeout:.0f} s")


def spread(samples: list[tuple[float, int]]) -> list[float]:
    """Done times from (time, done) samples, spread evenly within each sampling interval."""
    out: list[float] = []
    for (t0, d0), (t1, d1) in zip(samples, samples[1:]):
        k = max(0, d1 - d0)
        out.extend(t0 + (t1 - t0) * (i + 1) / k for i in range(k))
    return out


def run(site: Site, chains: int, concurrency: int) -> dict:
    preload(site.amqp, chains)
    worker = site.spawn(["celery", "-A", "bench.celery_app", "worker", "-Q", ",".join(QUEUES),
                         "-c", str(concurrency), "-P", "prefork", "--without-gossip", "--without-mingle",
                         "--without-heartbeat", "-l", "WARNING"],
                        env={"BENCH_CELERY_BROKER": site.amqp})
    try:
        amqp.wait_consumers(site.amqp, QUEUES, 1)
        samples = sample_done(site.amqp, chains, timeout=600)
        time.sleep(0.2)  # the last prefetched ones
        pids = [worker.pid, *children(worker.pid)]
        peak = sum(peak_rss_mib(p) for p in pids)
    finally:
        site.stop([worker])
    throughput = steady_rate(spread(samples), procs=concurrency)
    return throughput.as_dict() | {"chains": chains, "peak_rss_mib": peak, "processes": len(pids)}
