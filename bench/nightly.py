"""Case 4: the example nightly job, ``merchant_daily``, end to end on a real HBase, against a plain scan-and-fold.

The tables are real HBase tables behind its Thrift server (``BENCH_HBASE``,
default ``hbase://127.0.0.1:9090``, the one ``deploy/dev/hbase.sh`` starts),
under a table prefix of the bench's own, dropped afterwards. ``events`` is
pre-split into 8 regions with the development HBase's admin tool when it is
there (Thrift cannot pre-split); events are generated and flushed first, not
timed. With the workers subscribed, the clock runs from starting ``swarm
master`` to its exit with the run done: planning (the table's regions), the
map phase, the barrier, the reduce phase. rows/s is source events over that
time; chunks/s is every message the run completed (map chunks, their
continuations and reduce buckets) over the same time. The map phase's own
rate counts from the run's opening (in the ledger) to its last map message
done.

The baseline is what one process does without Swarm: a plain happybase loop
scanning the day's events through the same Thrift server and folding the same
per-merchant sums, timed before and after Swarm's run (the faster counts),
its result checked against the summary Swarm wrote.

``BENCH_HBASE=dev`` runs the case on the HBase Thrift development server
instead (in the bench process), as before HBase was available.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from typing import Any

import happybase

from bench.measure import peak_rss_mib
from bench.site import case_config, timed_master
from swarm.backends import open_tables
from swarm.keyrange import uniform_splits
from swarm.ledger import MessageState
from swarm.tables.hbase import HBaseTables
from tests.support import ROOT
from tests.support.site import Site
from workers.jobs import merchant_daily as md

JOB = "merchant_daily"
REGIONS = 8
HBASE = os.environ.get("BENCH_HBASE", "hbase://127.0.0.1:9090")
ADMIN = ROOT / "deploy" / "dev" / "hbase.sh"


def run(site: Site, events: int, chunks: int, procs: int, date: str = "2030-02-01") -> dict:
    if HBASE == "dev":
        from swarm.hbase_dev import DevServer

        with DevServer(str(site.tmp / "hbase-dev.db")) as server:
            return _run(site, server.url, events, chunks, procs, date, real=False)
    # Fewer, shorter retries than a worker's: a bench on an HBase that is down says so within minutes.
    url = f"{HBASE}{'&' if '?' in HBASE else '?'}table_prefix={site.database}&retries=3&timeout_ms=30000"
    try:
        return _run(site, url, events, chunks, procs, date, real=True)
    finally:
        drop_tables(url)


def _run(site: Site, url: str, events: int, chunks: int, procs: int, date: str, real: bool) -> dict:
    store = open_tables(url)
    try:
        store.tables()  # HBase answers, or the case stops here saying why
        presplit = prepare(store, date, events, admin=real and ADMIN.exists())
    finally:
        store.close()
    before = scan_and_fold(url, date)
    config = case_config(site, "nightly", {JOB: {"chunks": chunks}}, tables=url)
    seconds, peak = timed_master(site, config, JOB, list(md.job.stages), date, procs, "nightly",
                                 lambda workers: max(peak_rss_mib(w.pid) for w in workers))
    after = scan_and_fold(url, date)
    ledger = site.ledger()
    try:
        run_id = md.job.run_id({"date": date})
        rows = ledger.counters(run_id).get("rows", 0)
        done = ledger.counts(run_id).get(MessageState.DONE, 0)
    finally:
        ledger.close()
    # The run opened, planned and its map phase done: the part of the run a scan-and-fold does (without writing).
    [(opened, map_done)] = site.query(
        "SELECT r.created_at, MAX(m.updated_at) FROM swarm_runs r JOIN swarm_messages m ON m.run_id = r.id "
        "WHERE r.id = %s AND m.phase = 'map' GROUP BY r.created_at", (run_id,))
    map_seconds = float(map_done) - float(opened)
    if rows != events:
        raise RuntimeError(f"the nightly run counted {rows} rows, not {events}")
    store = open_tables(url)
    try:
        exact = md.summary(store, date) == before["summary"] == after["summary"]
        regions = len(store.regions(md.EVENTS))
    finally:
        store.close()
    if not exact:
        raise RuntimeError("the summary Swarm wrote differs from the plain scan-and-fold's")
    plain = max(before["rows_per_s"], after["rows_per_s"])
    return {"events": events, "chunks": chunks, "procs": procs, "seconds": seconds, "messages": done,
            "rows_per_s": events / seconds, "chunks_per_s": done / seconds, "peak_rss_mib": peak,
            "map_seconds": map_seconds, "map_rows_per_s": events / map_seconds,
            "store": f"HBase {hbase_version()}" if real else "HBase Thrift dev server", "regions": regions,
            "presplit": presplit,
            "scan_fold": {"rows_per_s": plain, "runs_rows_per_s": [before["rows_per_s"], after["rows_per_s"]],
                          "seconds": events / plain},
            "vs_scan_fold": events / seconds / plain, "exact": exact}


def prepare(store: Any, date: str, events: int, admin: bool) -> bool:
    """Create the tables and generate the day; with ``admin``, ``events`` pre-split and flushed by the admin tool.

    On the development server ``create_tables`` pre-splits by itself.
    """
    presplit = not admin
    if admin:
        splits = ",".join(k.decode() for k in uniform_splits(md.day_prefix(date), REGIONS))
        presplit = _admin("create-presplit", store._full(md.EVENTS), "e", "--splits", splits)
    md.create_tables(store, date, regions=REGIONS)  # the rest; an existing table is left as it is
    md.generate(store, date, events)
    if admin:
        _admin("flush", store._full(md.EVENTS))  # both readers read store files, not the memstore
    return presplit


def scan_and_fold(url: str, date: str) -> dict:
    """The day's summary the plain way: one happybase connection, one scanner, one process; timed."""
    tables = HBaseTables(url)  # only to read the URL: host, port, transport, table name
    host, port = tables.servers[0]
    name = tables._full(md.EVENTS)
    conn = happybase.Connection(host, port, timeout=tables.timeout_ms or None, transport=tables.transport,
                                protocol=tables.protocol)
    try:
        started = time.monotonic()
        totals: dict[str, dict] = {}
        rows = 0
        for _, cells in conn.table(name).scan(row_prefix=md.day_prefix(date), batch_size=1000):
            md._fold_event(totals, cells)
            rows += 1
        seconds = time.monotonic() - started
    finally:
        conn.close()
    summary = {f"{date}/{m}".encode(): {k.encode(): v.encode() for k, v in md.summary_cells(t).items()}
               for m, t in totals.items()}
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "summary": summary}


def hbase_version() -> str:
    """The HBase version ``deploy/dev/hbase.sh`` runs: the one its Maven module pins."""
    pom = ROOT / "deploy" / "dev" / "hbase" / "pom.xml"
    found = re.search(r"<hbase.version>([^<]+)</hbase.version>", pom.read_text()) if pom.exists() else None
    return found.group(1) if found else "(version unknown)"


def drop_tables(url: str) -> None:
    store = open_tables(url)
    try:
        for name in store.tables():
            store.drop_table(name)
    finally:
        store.close()


def _admin(*args: str) -> bool:
    done = subprocess.run(["bash", str(ADMIN), "admin", *args], capture_output=True, text=True, timeout=300)
    return done.returncode == 0
