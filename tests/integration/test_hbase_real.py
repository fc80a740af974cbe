"""The HBase adapter and region planning on a real HBase (``deploy/dev/hbase.sh``), not the development server.

Several Thrift servers and one of them killed in the middle of a run; a
Thrift server started framed and compact; scans slower than the scanner
lease (the test HBase's is short); plans from a pre-split table's regions,
and a region split in the middle of a run's scan. Each test has a table
prefix of its own on the shared HBase; a server a test kills is its own.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import happybase
import Hbase_thrift
import pytest

from swarm.effects import Delete, Put
from swarm.errors import BackendError
from swarm.keyrange import uniform_splits
from swarm.ledgers.sqlite import SqliteLedger
from swarm.planning import region_chunks
from swarm.tables.hbase import HBaseTables
from swarm.testing import plan, run_job
from tests.support.contracts.table import fill, keys, scan_interrupted
from tests.support.hbase import HOST, ROOT, HBase, ThriftServer, free_port
from workers.jobs import merchant_daily as md

DATE = "2026-11-20"
DAY = md.day_prefix(DATE)
SHARED = HBase()  # the session's HBase, as conftest's hbase_cluster sees it
PORT = SHARED.thrift_port





def scanner_lease() -> float:
    """The test HBase's hbase.client.scanner.timeout.period in seconds, from the config deploy/dev/hbase.sh wrote."""
    cache = Path(os.environ.get("HBASE_DEV_CACHE") or ROOT / ".cache" / "hbase")
    site = Path(os.environ.get("HBASE_DEV_DATA") or cache / "data") / "conf" / "hbase-site.xml"
    found = re.search(r"<name>hbase.client.scanner.timeout.period</name><value>(\d+)</value>",
                      site.read_text()) if site.exists() else None
    return int(found.group(1)) / 1000 if found else 5.0


def thrift(*options: str) -> ThriftServer:
    """A Thrift server of the test's own against the shared HBase, on a port of its own, started."""
    server = ThriftServer(SHARED, free_port(), options)
    server.start()
    return server


class Prefixed:
    """The shared HBase seen through a table prefix of the test's own."""

    def __init__(self):
        self.prefix = f"it{uuid.uuid4().hex[:10]}"

    def url(self, port: int = PORT, **options: object) -> str:
        return f"hbase://{HOST}:{port}?table_prefix={self.prefix}" + "".join(f"&{k}={v}" for k, v in options.items())

    def full(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def presplit(self, name: str, families: list[str], splits: list[bytes]) -> None:
        """Create ``name`` split at ``splits``, as an operator does in the HBase shell (Thrift cannot)."""
        cuts = ",".join(k.decode() for k in splits)
        SHARED.script("admin", "create-presplit", self.full(name), *families, "--splits", cuts)

    def split(self, name: str, row: bytes) -> None:
        """Split the region holding ``row`` at ``row``; returns once both halves are online."""
        SHARED.script("admin", "split", self.full(name), row.decode())

    def drop(self) -> None:
        tables = HBaseTables(self.url())
        for name in tables.tables():
            tables.drop_table(name)
        tables.close()


@pytest.fixture(scope="module")
def hbase(hbase_cluster):
    """The shared HBase (conftest's ``hbase_cluster`` starts it if its Thrift server does not answer)."""
    return hbase_cluster.thrift_port


@pytest.fixture
def site(hbase):
    made = Prefixed()
    yield made
    made.drop()


@pytest.fixture(scope="module")
def lease() -> float:
    value = scanner_lease()
    assert value <= 10, f"the test HBase's scanner lease is {value} s: these tests wait past it"
    return value


@pytest.fixture
def events(site):
    """The example job's tables on HBase, ``events`` pre-split as an operator would (4 regions over the day)."""
    site.presplit(md.EVENTS, ["e"], uniform_splits(DAY, 4))
    tables = HBaseTables(site.url(retries=8, backoff=0.2, timeout_ms=30000))
    md.create_tables(tables, DATE, regions=4)  # the other tables; events exists and is left as it is
    yield tables
    tables.close()


def exact(tables, ledger, run, rows: int) -> None:
    """The run is done, counted every row once, and wrote the summary a plain computation gives."""
    assert run.status == "done", run.error
    assert ledger.counters(run.id).get("rows") == rows
    assert md.summary(tables, DATE) == md.reference(tables, DATE) != {}


# several Thrift servers --------------------------------------------------------------------


def test_workers_go_on_through_another_thrift_server_when_one_is_killed_mid_run(site, events, monkeypatch, caplog):
    first, second = thrift(), thrift()
    try:
        md.generate(events, DATE, 4000)
        tables = HBaseTables(f"hbase://{HOST}:{first.port},{HOST}:{second.port}?table_prefix={site.prefix}"
                             "&retries=8&backoff=0.2&timeout_ms=30000")
        monkeypatch.setattr(md, "SCAN_BATCH", 100)  # many batches: the kill lands between two of a scan
        killed, lock, seen = threading.Event(), threading.Lock(), [0]
        fold = md._fold_event

        def fold_and_kill(totals, cells):
            with lock:
                seen[0] += 1
                now = seen[0] == 1000
            if now:
                first.kill()  # SIGKILL, from a handler's thread, in the middle of its scan
                killed.set()
            fold(totals, cells)

        monkeypatch.setattr(md, "_fold_event", fold_and_kill)
        ledger = SqliteLedger()
        with caplog.at_level(logging.WARNING, logger="swarm.tables.hbase"):
            run = run_job(md.job, {"date": DATE}, tables, ledger, workers=2, options={"chunks": 8})
        monkeypatch.setattr(md, "_fold_event", fold)
        assert killed.is_set() and not first.running
        exact(tables, ledger, run, 4000)
        assert f"retrying through {HOST}:{second.port}" in caplog.text
        assert tables._server == 1
        tables.close()
    finally:
        first.kill()
        second.kill()


# transport and protocol ----------------------------------------------------------------------


def test_a_framed_compact_thrift_server_is_read_and_written_through(site):
    server = thrift("-f", "-c")  # HBase's ThriftServer -f -c: framed transport, compact protocol
    try:
        tables = HBaseTables(site.url(server.port, transport="framed", protocol="compact", retries=2))
        tables.create_table("t", ["f", "g"])
        names = fill(tables, "t", 40)
        tables.apply([Put("t", b"k0003", {b"g:x": b"1"}), Delete("t", b"k0005")])
        assert keys(tables.scan("t", batch_size=7)) == [k for k in names if k != b"k0005"]
        assert tables.row("t", b"k0003") == {b"f:v": b"0003", b"g:x": b"1"}
        assert tables.regions("t") == [(b"", b"")]
        tables.close()
        plain = happybase.Connection(HOST, server.port, table_prefix=site.prefix, transport="framed",
                                     protocol="compact")
        assert plain.table("t").row(b"k0003", columns=[b"g"]) == {b"g:x": b"1"}
        plain.close()
        # A client with the defaults (buffered, binary) finds the connection closed at once, and is told why.
        wrong = HBaseTables(f"hbase://{HOST}:{server.port}?retries=0&timeout_ms=3000")
        with pytest.raises(BackendError, match="another transport or protocol than this URL's"):
            wrong.tables()
        wrong.close()
    finally:
        server.kill()


# scanner leases -------------------------------------------------------------------------------


def test_a_scan_idle_past_the_scanner_lease_goes_on_after_its_last_row(site, lease):
    tables = HBaseTables(site.url())
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 14)
    past_lease = functools.partial(time.sleep, lease + 1)
    at = {
        2: past_lease, 4: past_lease,  # inside a batch, and at a batch's last row: past the region server's lease
        9: functools.partial(time.sleep, 2 * lease + 1),  # past the Thrift server's own scanner cache (twice it)
    }
    assert scan_interrupted(tables, "t", 4, at) == names
    tables.close()


def test_a_batch_larger_than_what_the_consumer_reads_within_a_lease(site, lease):
    tables = HBaseTables(site.url())
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 8)
    seen, started = [], time.monotonic()
    for key, _ in tables.scan("t", batch_size=100):  # one batch of 100 asked, 8 rows read slowly
        seen.append(key)
        time.sleep((lease + 1) / 4)
    assert seen == names and time.monotonic() - started > lease
    tables.close()


def test_a_plain_happybase_scanner_held_past_the_lease_is_lost(site, lease):
    # What the adapter's one scanner per batch avoids: the scanner a plain happybase loop keeps open.
    # Past the region server's lease HBase's own client opens a new one; past twice the lease the
    # Thrift server has dropped it.
    conn = happybase.Connection(HOST, PORT, table_prefix=site.prefix)
    conn.create_table("t", {"f": {}})
    table = conn.table("t")
    for i in range(6):
        table.put(b"r%d" % i, {b"f:a": b"x"})
    scan = table.scan(batch_size=2)
    assert [next(scan)[0], next(scan)[0]] == [b"r0", b"r1"]
    time.sleep(2 * lease + 1)
    with pytest.raises((Hbase_thrift.IllegalArgument, Hbase_thrift.IOError)):
        list(scan)
    conn.close()


def test_a_handler_slower_than_the_lease_reads_every_row_once(events, monkeypatch, lease):
    md.generate(events, DATE, 600)
    monkeypatch.setattr(md, "SCAN_BATCH", 50)
    lock, seen = threading.Lock(), [0]
    fold = md._fold_event

    def slow_fold(totals, cells):
        with lock:
            seen[0] += 1
            nap = seen[0] in (25, 160)  # inside a batch, in the middle of a chunk
        if nap:
            time.sleep(lease + 1)
        fold(totals, cells)

    monkeypatch.setattr(md, "_fold_event", slow_fold)
    ledger = SqliteLedger()
    run = run_job(md.job, {"date": DATE}, events, ledger, workers=1, options={"chunks": 4})
    monkeypatch.setattr(md, "_fold_event", fold)
    assert seen[0] >= 600
    exact(events, ledger, run, 600)


# regions drive the plan -------------------------------------------------------------------------


def test_region_chunks_follow_a_presplit_table_and_its_later_splits(site):
    site.presplit(md.EVENTS, ["e"], [DAY + b"4", DAY + b"8", DAY + b"c"])
    tables = HBaseTables(site.url())
    assert [start for start, _ in tables.regions(md.EVENTS)] == [b"", DAY + b"4", DAY + b"8", DAY + b"c"]
    chunks = region_chunks(tables, md.EVENTS, prefix=DAY, per_region=2)
    assert [c.payload["start"] for c in chunks] == [DAY + d for d in (b"", b"2", b"4", b"6", b"8", b"a", b"c", b"e")]
    assert chunks[-1].payload["stop"] == b"2026-11-200"
    site.split(md.EVENTS, DAY + b"a")
    chunks = region_chunks(tables, md.EVENTS, prefix=DAY)
    assert [c.payload["start"] for c in chunks] == [DAY, DAY + b"4", DAY + b"8", DAY + b"a", DAY + b"c"]
    tables.close()


def test_the_example_job_plans_by_the_regions_of_its_events_table_on_hbase(events):
    md.generate(events, DATE, 2000)
    assert [start for start, _ in events.regions(md.EVENTS)] == [b"", *uniform_splits(DAY, 4)]
    ledger = SqliteLedger()
    run = run_job(md.job, {"date": DATE}, events, ledger, options={"chunks": 8})
    exact(events, ledger, run, 2000)
    chunks = {row[0] for row in ledger._rows("SELECT chunk FROM swarm_messages WHERE run_id = ? AND phase = 'map'",
                                              (run.id,))}
    assert chunks == {f"r{i:05d}" for i in range(8)}  # two per region: no chunk crosses a region's boundary
    planned = plan(md.job, "map", tables=events, params={"date": DATE}, options={"chunks": 8})
    assert [c.payload["start"] for c in planned][::2] == [DAY, *uniform_splits(DAY, 4)]


def test_a_region_split_in_the_middle_of_a_runs_scan_loses_and_doubles_nothing(site, events, monkeypatch):
    md.generate(events, DATE, 3000)
    monkeypatch.setattr(md, "SCAN_BATCH", 50)
    first_region = events.regions(md.EVENTS)[1]  # [day/4000, day/8000): scanned by one chunk
    split_at = DAY + b"6"
    scan, split = events.scan, threading.Event()

    def scan_and_split(name, start=b"", stop=b"", prefix=None, columns=None, batch_size=1000):
        for i, row in enumerate(scan(name, start, stop, prefix, columns, batch_size)):
            if name == md.EVENTS and start == first_region[0] and i == 200 and not split.is_set():
                site.split(md.EVENTS, split_at)  # ahead of the scan, which goes on into both halves
                split.set()
            yield row

    monkeypatch.setattr(events, "scan", scan_and_split)
    ledger = SqliteLedger()
    run = run_job(md.job, {"date": DATE}, events, ledger, options={"chunks": 4})
    monkeypatch.undo()
    assert split.is_set()
    assert split_at in [start for start, _ in events.regions(md.EVENTS)]
    exact(events, ledger, run, 3000)
