"""Case: a skewed day, half its events in one chunk's range; the example job with straggler splitting, and without.

Two days of ``merchant_daily`` events with the same skew (``md.generate(...,
hot=0.5)``: half the events keyed under ``<date>/7f``, inside one of the 32
chunks) are generated on HBase (``BENCH_HBASE``, as the nightly case),
``events`` pre-split into 8 regions per day, not timed. The scan reads a
chunk ``slice_rows`` rows at a time, handing on the rest. One day runs with
``[split]`` off: the hot chunk is a chain of slices, one after another, on
one thread, while the others wait. The other day runs with it on: once the
phase is down to ``tail`` open messages, the rest of the hot chunk is split
``ways`` ways among the idle threads. The same worker processes' count, the
same chunks; each day its own workers, started with its config before the
clock starts.

The clock runs from starting ``swarm master`` to its exit with the run done;
the map phase from the run's opening to its last map message done (the
ledger's times). Both summaries must equal the plain computation. Reported
as the ratio of the times (off / on): more than 1 is faster with splitting.
"""
from __future__ import annotations

from typing import Any

from bench.nightly import ADMIN, HBASE, REGIONS, _admin, drop_tables, hbase_version
from bench.site import case_config, timed_master
from swarm.backends import open_tables
from swarm.keyrange import uniform_splits
from swarm.ledger import MessageState
from swarm.slices import is_part
from tests.support.site import Site
from workers.jobs import merchant_daily as md

JOB = "merchant_daily"
DATES = {False: "2030-03-01", True: "2030-03-02"}  # splitting off, on: a day each, the same skew
HOT = 0.5


def run(site: Site, events: int, chunks: int, procs: int, slice_rows: int, ways: int = 4) -> dict:
    if HBASE == "dev":
        from swarm.hbase_dev import DevServer

        with DevServer(str(site.tmp / "hbase-skew.db")) as server:
            return _run(site, server.url, events, chunks, procs, slice_rows, ways, real=False)
    url = f"{HBASE}{'&' if '?' in HBASE else '?'}table_prefix={site.database}_skew&retries=3&timeout_ms=30000"
    try:
        return _run(site, url, events, chunks, procs, slice_rows, ways, real=True)
    finally:
        drop_tables(url)


def _run(site: Site, url: str, events: int, chunks: int, procs: int, slice_rows: int, ways: int,
         real: bool) -> dict:
    store = open_tables(url)
    try:
        store.tables()  # HBase answers, or the case stops here saying why
        prepare(store, events, admin=real and ADMIN.exists())
    finally:
        store.close()
    # Split while every thread of the fleet could be busy (4 scan threads a worker process), and a rest
    # only when each of its parts would still be a slice or more.
    split = {"enabled": True, "ways": ways, "tail": 4 * procs, "min_rows": ways * slice_rows}
    runs = {on: _one(site, url, DATES[on], events, chunks, procs, slice_rows, split if on else None)
            for on in (False, True)}
    off, on = runs[False], runs[True]
    return {"events": events, "hot": HOT, "chunks": chunks, "procs": procs, "slice_rows": slice_rows,
            "split": split, "store": f"HBase {hbase_version()}" if real else "HBase Thrift dev server",
            "off": off, "on": on, "speedup": off["seconds"] / on["seconds"],
            "map_speedup": off["map_seconds"] / on["map_seconds"]}


def prepare(store: Any, events: int, admin: bool) -> None:
    """The job's tables, ``events`` pre-split into ``REGIONS`` per day, and the two skewed days; not timed."""
    splits: list[bytes] = []
    for date in DATES.values():
        splits += [md.day_prefix(date), *uniform_splits(md.day_prefix(date), REGIONS)]
    if admin:
        _admin("create-presplit", store._full(md.EVENTS), "e", "--splits", ",".join(k.decode() for k in splits))
    store.create_table(md.EVENTS, ["e"], splits)  # the development server's way; an existing table stays
    for spec in md.job.tables.values():
        if spec.name != md.EVENTS:
            store.create_table(spec.name, spec.families)
    for date in DATES.values():
        md.generate(store, date, events, hot=HOT)
    if admin:
        _admin("flush", store._full(md.EVENTS))


def _one(site: Site, url: str, date: str, events: int, chunks: int, procs: int, slice_rows: int,
         split: dict | None) -> dict:
    name = f"skew-{'on' if split else 'off'}"
    config = case_config(site, name, {JOB: {"chunks": chunks, "slice_rows": slice_rows}}, tables=url, split=split)
    seconds, _ = timed_master(site, config, JOB, list(md.job.stages), date, procs, name)
    run_id = md.job.run_id({"date": date})
    ledger = site.ledger()
    try:
        rows = ledger.counters(run_id).get("rows", 0)
        done = ledger.counts(run_id).get(MessageState.DONE, 0)
        seqs = [r.message.id.rsplit("/", 1)[1] for r in ledger.recorded(run_id, "map")]
    finally:
        ledger.close()
    [(opened, map_done)] = site.query(
        "SELECT r.created_at, MAX(m.updated_at) FROM swarm_runs r JOIN swarm_messages m ON m.run_id = r.id "
        "WHERE r.id = %s AND m.phase = 'map' GROUP BY r.created_at", (run_id,))
    store = open_tables(url)
    try:
        exact = md.summary(store, date) == md.reference(store, date)
    finally:
        store.close()
    if rows != events or not exact:
        raise RuntimeError(f"the {name} run counted {rows} rows of {events}; summary exact: {exact}")
    map_seconds = float(map_done) - float(opened)
    return {"seconds": seconds, "map_seconds": map_seconds, "rows_per_s": events / seconds,
            "map_rows_per_s": events / map_seconds, "messages": done, "map_messages": len(seqs),
            "parts": sum(1 for s in seqs if is_part(s)), "exact": exact}
