"""Case 4: the example nightly job, ``merchant_daily``, end to end on the HBase Thrift dev server.

Events are generated first (not timed). With the workers subscribed, the
clock runs from starting ``swarm master`` to its exit with the run done:
planning (region boundaries from the Thrift server), the map phase, the
barrier, the reduce phase. rows/s is source events over that time;
chunks/s is every message the run completed (map chunks, their
continuations and reduce buckets) over the same time.
"""
from __future__ import annotations

import time

from bench import amqp
from bench.measure import peak_rss_mib
from bench.site import case_config
from swarm.backends import open_tables
from swarm.broker import stage_queue
from swarm.hbase_dev import DevServer
from swarm.ledger import MessageState
from tests.support.site import Site
from workers.jobs import merchant_daily as md

JOB = "merchant_daily"


def generate(url: str, date: str, events: int) -> None:
    tables = open_tables(url)
    try:
        md.create_tables(tables, date)
        md.generate(tables, date, events)
    finally:
        tables.close()


def run(site: Site, events: int, chunks: int, procs: int, date: str = "2030-02-01") -> dict:
    with DevServer(str(site.tmp / "hbase-dev.db")) as hbase:
        generate(hbase.url, date, events)
        config = case_config(site, "nightly", {JOB: {"chunks": chunks}}, tables=hbase.url)
        workers = [site.swarm(config, "worker", "--job", JOB) for _ in range(procs)]
        try:
            amqp.wait_consumers(site.amqp, [stage_queue(JOB, s) for s in md.job.stages], procs)
            started = time.monotonic()
            master = site.swarm(config, "master", JOB, "--date", date)
            code = master.wait(timeout=900)
            seconds = time.monotonic() - started
            peak = max(peak_rss_mib(w.pid) for w in workers)
        finally:
            site.stop(workers)
    if code != 0:
        raise RuntimeError(f"the nightly master exited with {code}:\n{site.log_tail(master)}")
    ledger = site.ledger()
    try:
        run_id = md.job.run_id({"date": date})
        rows = ledger.counters(run_id).get("rows", 0)
        done = ledger.counts(run_id).get(MessageState.DONE, 0)
    finally:
        ledger.close()
    if rows != events:
        raise RuntimeError(f"the nightly run counted {rows} rows, not {events}")
    return {"events": events, "chunks": chunks, "procs": procs, "seconds": seconds, "messages": done,
            "rows_per_s": events / seconds, "chunks_per_s": done / seconds, "peak_rss_mib": peak}
