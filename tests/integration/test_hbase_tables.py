"""``HBaseTables`` over a real TCP Thrift connection: to HBase's own Thrift server, and to the
HBase development server (``swarm.hbase_dev``), its stand-in for local work.

The shared table-store contract on both, then what only a networked store faces: the
Thrift server restarting or crashing mid-scan and mid-write, scanner leases, region splits,
unreachable servers, several threads at once, and plain happybase clients, whose answers
from HBase the development server must match.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import urllib.parse

import happybase
import Hbase_thrift
import pytest
from thriftpy2.thrift import TApplicationException

from swarm.effects import Delete, Put
from swarm.errors import BackendError
from swarm.hbase_dev import DevServer
from swarm.tables.embedded import EmbeddedTables
from swarm.tables.hbase import HBaseTables
from tests.support.contracts.table import TableStoreContract, fill, keys, scan_interrupted
from tests.support.hbase import HOST, TestHBase, answers, free_port

pytestmark = pytest.mark.integration

DEV_RETRY = {"retries": 8, "backoff": 0.02, "backoff_max": 0.5}
# A JVM Thrift server takes seconds to come back: enough retries to wait that out.
HBASE_RETRY = {"retries": 20, "backoff": 0.1, "backoff_max": 1.0}


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    server = DevServer(str(tmp_path_factory.mktemp("hbase") / "tables.db"))
    server.start()
    yield server
    server.stop()


class TestDevServerContract(TableStoreContract):
    @pytest.fixture
    def tables(self, shared_server):
        store = HBaseTables(shared_server.url)
        yield store
        for name in store.tables():
            store.drop_table(name)
        store.close()


class TestDevServerContractWithTablePrefix(TableStoreContract):
    """The contract again through a table prefix, next to another application's same-named tables."""

    @pytest.fixture
    def tables(self, shared_server):
        neighbour = happybase.Connection(shared_server.host, shared_server.port)
        neighbour.create_table("t", {"f": {}})  # not ours: the prefix keeps it out of sight
        store = HBaseTables(shared_server.url + "?table_prefix=nightly")
        yield store
        for name in store.tables():
            store.drop_table(name)
        store.close()
        neighbour.delete_table("t", disable=True)
        neighbour.close()


class TestHBaseContract(TableStoreContract):
    """The contract on HBase, through the test's table prefix, next to a table outside the prefix.

    Pre-split tables are created through DevAdmin, as an operator creates them in the HBase shell
    (HBase's Thrift1 API cannot pre-split); the adapter then finds them and reads their regions.
    """

    @pytest.fixture
    def tables(self, hbase_server, hbase_cluster):
        neighbour = happybase.Connection(HOST, hbase_server.port)
        outside = f"{hbase_server.prefix}t"  # shares the prefix's letters but not "<prefix>_"
        neighbour.create_table(outside, {"f": {}})
        neighbour.close()
        store = hbase_server.open_tables()
        yield store
        store.close()
        hbase_cluster.drop_later(outside)


class Target:
    """A Thrift server a test may stop, kill and start: the development server, or HBase's of the test's own."""

    def __init__(self, kind: str, server, url: str, retry: dict):
        self.kind, self.server, self._url, self.retry = kind, server, url, retry

    def url(self, **options) -> str:
        query = urllib.parse.urlencode({**self.retry, **options})
        return f"{self._url}{'&' if '?' in self._url else '?'}{query}"

    def tables(self, **options) -> HBaseTables:
        """The adapter on this server; on HBase, ``create_table(splits=...)`` pre-splits as an operator would."""
        if self.kind == "hbase":
            return self.server.open_tables(**{**self.retry, **options})
        return HBaseTables(self.url(**options))

    def happybase(self) -> happybase.Connection:
        """A plain happybase connection that sees the test's tables by their Swarm names."""
        if self.kind == "hbase":
            return self.server.happybase()
        return happybase.Connection(self.server.host, self.server.port)

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> int:
        return self.server.start()

    def kill(self) -> None:
        (self.server.kill if self.kind == "hbase" else self.server.stop)()

    def restart(self, kill: bool = False) -> None:
        port = self.server.port
        self.kill() if kill else self.stop()
        assert self.start() == port


@pytest.fixture(params=["dev", "hbase"])
def server(request, tmp_path):
    """A server of the test's own, free to be restarted: same port, same data."""
    if request.param == "dev":
        dev = DevServer(str(tmp_path / "tables.db"))
        dev.start()
        yield Target("dev", dev, dev.url, DEV_RETRY)
        dev.stop()
    else:
        own = TestHBase(request.getfixturevalue("hbase_cluster"), thrift=request.getfixturevalue("own_thrift"))
        try:
            yield Target("hbase", own, own.url, HBASE_RETRY)
        finally:
            own.close()


@pytest.fixture(scope="module")
def own_thrift(hbase_cluster):
    """A Thrift server of the module's own: tests restart, kill and start it; each leaves it running."""
    with hbase_cluster.thrift() as server:
        yield server


@pytest.fixture
def tables(server):
    store = server.tables()
    yield store
    store.close()


# restarts -------------------------------------------------------------------------------


def retried(caplog) -> int:
    return sum("retrying" in r.getMessage() for r in caplog.records if r.name == "swarm.tables.hbase")


def test_a_scan_survives_server_restarts_with_every_row_exactly_once(server, tables, caplog):
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 100)
    # inside a batch, and at a batch's last row
    assert scan_interrupted(tables, "t", 7, at={10: server.restart, 49: server.restart}) == names
    assert retried(caplog) >= 2  # each restart broke the pooled connection, and the scan got over it


def test_a_scan_survives_restarts_while_batches_are_in_flight(server, tables):
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 3000)
    done = threading.Event()

    def keep_restarting():
        for _ in range(3):
            time.sleep(0.05)
            if done.is_set():
                return
            server.restart()

    restarter = threading.Thread(target=keep_restarting)
    restarter.start()
    try:
        seen = keys(tables.scan("t", batch_size=25))
    finally:
        done.set()
        restarter.join()
    assert seen == names


def test_apply_retries_on_connections_a_restart_broke(server, tables, caplog):
    tables.create_table("t", ["f"])
    tables.apply([Put("t", b"before", {b"f:a": b"1"})])
    server.restart()  # every pooled connection is now dead
    tables.apply([Put("t", b"after", {b"f:a": b"2"}), Delete("t", b"before")])
    assert list(tables.scan("t")) == [(b"after", {b"f:a": b"2"})]
    assert retried(caplog) >= 1


def test_apply_waits_for_a_server_that_is_coming_back(server, tables):
    tables.create_table("t", ["f"])
    server.stop()
    comeback = threading.Timer(0.3, server.start)
    comeback.start()
    try:
        tables.apply([Put("t", b"r%d" % i, {b"f:a": b"x"}) for i in range(50)])
    finally:
        comeback.join()
    assert len(list(tables.scan("t"))) == 50


def test_an_unreachable_server_ends_in_a_clear_backend_error():
    port = free_port()
    tables = HBaseTables(f"hbase://127.0.0.1:{port}?retries=2&backoff=0.01")
    with pytest.raises(BackendError, match=rf"127\.0\.0\.1:{port}: list tables failed 3 times"):
        tables.tables()


# scanner leases ---------------------------------------------------------------------


def test_a_scan_resumes_after_its_consumer_idles_past_the_scanner_lease(tmp_path):
    with DevServer(str(tmp_path / "tables.db"), scanner_lease=0.2) as server:
        tables = HBaseTables(server.url)
        tables.create_table("t", ["f"])
        names = fill(tables, "t", 30)
        seen = []
        for key, _ in tables.scan("t", batch_size=4):
            seen.append(key)
            if len(seen) in (2, 13):
                assert server.open_scanners() == 0  # no scanner is held while the consumer works
                time.sleep(0.5)  # idle well past the lease
        assert seen == names
        tables.close()


def test_on_hbase_a_scan_outlives_an_idle_consumer_that_a_happybase_scanner_does_not(hbase_server, hbase_cluster):
    """HBase's Thrift server forgets a scanner left idle for twice the scanner lease; ours never is idle."""
    tables = hbase_server.open_tables()
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 30)
    raw = hbase_server.happybase().table("t").scan(batch_size=2)
    assert [next(raw)[0], next(raw)[0]] == names[:2]
    seen = []
    for key, _ in tables.scan("t", batch_size=4):
        seen.append(key)
        if len(seen) == 6:
            time.sleep(2 * hbase_cluster.scanner_timeout + 1)
    assert seen == names
    with pytest.raises(Hbase_thrift.IllegalArgument, match="scanner ID is invalid"):
        next(raw)  # the Thrift server dropped it: a plain happybase scan cannot go on
    tables.close()


def test_a_scanner_lost_inside_every_batch_ends_in_a_backend_error(tmp_path):
    # A zero lease ends every scanner between its opening and its first read.
    with DevServer(str(tmp_path / "tables.db"), scanner_lease=0.0) as server:
        tables = HBaseTables(f"{server.url}?retries=2&backoff=0.01")
        tables.create_table("t", ["f"])
        fill(tables, "t", 3)
        with pytest.raises(BackendError, match="failed 3 times, last: .*ScannerTimeoutException"):
            list(tables.scan("t"))
        tables.close()


def test_the_dev_server_ends_an_idle_happybase_scanner(tmp_path):
    with DevServer(str(tmp_path / "tables.db")) as server:
        conn = happybase.Connection(server.host, server.port)
        conn.create_table("t", {"f": {}})
        table = conn.table("t")
        for i in range(5):
            table.put(b"r%d" % i, {b"f:a": b"x"})
        scan = table.scan(batch_size=2)
        assert [next(scan)[0], next(scan)[0]] == [b"r0", b"r1"]
        assert server.expire_scanners() == 1
        with pytest.raises(Hbase_thrift.IOError) as caught:
            next(scan)
        assert b"ScannerTimeoutException" in caught.value.message
        assert keys(table.scan(row_start=b"r2")) == [b"r2", b"r3", b"r4"]  # reopening from the last key works
        assert server.open_scanners() == 0
        conn.close()


# threads --------------------------------------------------------------------------------


def test_many_threads_share_one_store(server):
    tables = server.tables(pool_size=3)
    tables.create_table("t", ["f"])
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            tables.apply([Put("t", b"%d-%03d" % (n, i), {b"f:a": b"%d" % i}) for i in range(100)])
            assert len(list(tables.scan("t", prefix=b"%d-" % n, batch_size=9))) == 100
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert len(list(tables.scan("t"))) == 800
    tables.close()


# regions ----------------------------------------------------------------------------------


def test_presplit_tables_show_their_regions_to_plain_happybase(server, tables):
    tables.create_table("t", ["f"], splits=[b"k0005", b"k0010"])
    conn = server.happybase()
    regions = conn.table("t").regions()
    assert [(r["start_key"], r["end_key"]) for r in regions] == [(b"", b"k0005"), (b"k0005", b"k0010"), (b"k0010", b"")]
    if server.kind == "dev":
        assert {r["port"] for r in regions} == {server.server.port}  # the dev server serves every region itself
    else:
        assert server.server.port not in {r["port"] for r in regions}  # HBase names its region server
    conn.close()


def test_without_the_dev_extension_a_table_is_created_unsplit_with_a_warning(tmp_path, caplog):
    with DevServer(str(tmp_path / "tables.db"), extensions=False) as plain:
        tables = HBaseTables(plain.url)
        with caplog.at_level(logging.WARNING, logger="swarm.tables.hbase"):
            tables.create_table("t", ["f"], splits=[b"m"])
        assert tables.regions("t") == [(b"", b"")]
        advice = """Pre-split it in the HBase shell before the first run: create 't', 'f', SPLITS => ["m"]"""
        assert advice in caplog.text
        tables.apply([Put("t", b"r", {b"f:a": b"1"})])  # the connection is still good
        assert tables.row("t", b"r") == {b"f:a": b"1"}
        tables.close()


def test_on_hbase_a_table_created_with_splits_has_one_region_and_a_warning(hbase_server, caplog):
    tables = HBaseTables(hbase_server.url)  # the adapter alone: no operator pre-split it
    with caplog.at_level(logging.WARNING, logger="swarm.tables.hbase"):
        tables.create_table("t", ["f"], splits=[b"m"])
    assert tables.regions("t") == [(b"", b"")]
    full = hbase_server.full("t")
    assert f"""create '{full}', 'f', SPLITS => ["m"]""" in caplog.text
    tables.apply([Put("t", b"r", {b"f:a": b"1"})])  # the connection is still good
    assert tables.row("t", b"r") == {b"f:a": b"1"}
    tables.close()


def test_on_hbase_a_scan_sees_every_row_once_across_region_splits(hbase_server):
    tables = hbase_server.open_tables()
    tables.create_table("t", ["f"], splits=[b"k1000"])
    names = fill(tables, "t", 2000)
    seen = []
    for key, _ in tables.scan("t", batch_size=100):
        seen.append(key)
        if len(seen) == 350:
            hbase_server.split("t", b"k0500")  # the region being read; returns once both halves are online
            hbase_server.split("t", b"k1500")  # ahead of the scan
    assert seen == names
    assert tables.regions("t") == [(b"", b"k0500"), (b"k0500", b"k1000"), (b"k1000", b"k1500"), (b"k1500", b"")]
    tables.close()


# transports -------------------------------------------------------------------------------


def test_framed_transport_and_compact_protocol(tmp_path):
    with DevServer(str(tmp_path / "tables.db"), transport="framed", protocol="compact") as server:
        tables = HBaseTables(server.url)
        tables.create_table("t", ["f"], splits=[b"m"])
        names = fill(tables, "t", 12)
        assert keys(tables.scan("t", batch_size=5)) == names
        tables.close()
        conn = happybase.Connection(server.host, server.port, transport="framed", protocol="compact")
        assert conn.table("t").row(b"k0003") == {b"f:v": b"0003"}
        conn.close()


def test_on_hbase_a_hsha_thrift_server_with_the_compact_protocol(hbase_cluster):
    where = TestHBase(hbase_cluster, options=("-hsha", "-c"))  # a Thrift server of its own, run that way
    try:
        assert "transport=framed&protocol=compact" in where.url
        tables = where.open_tables()
        tables.create_table("t", ["f"], splits=[b"m"])
        names = fill(tables, "t", 12)
        assert keys(tables.scan("t", batch_size=5)) == names
        assert tables.regions("t") == [(b"", b"m"), (b"m", b"")]
        tables.close()
        conn = where.happybase()
        assert conn.table("t").row(b"k0003") == {b"f:v": b"0003"}
        conn.close()
        assert not answers(where.port)  # a buffered client gets nowhere with it
    finally:
        where.close()


# plain happybase, against both servers ------------------------------------------------------


@pytest.fixture(params=["dev", "hbase"])
def conn(request, tmp_path):
    """A plain happybase connection with table ``t`` (families f, up to 3 versions, and g); ``conn.kind``."""
    if request.param == "dev":
        server = DevServer(str(tmp_path / "tables.db"))
        server.start()
        conn = happybase.Connection(server.host, server.port)
    else:
        server = TestHBase(request.getfixturevalue("hbase_cluster"))
        conn = server.happybase()  # happybase's own table prefix: "t" is the test's own
    conn.kind = request.param
    conn.create_table("t", {"f": {"max_versions": 3}, "g": {}})
    yield conn
    conn.close()
    (server.stop if request.param == "dev" else server.close)()


def name(conn, table: str) -> bytes:
    """The table's name in raw Thrift calls (happybase adds its table prefix only in its own calls)."""
    return conn._table_name(table)


def test_plain_happybase_creates_puts_scans_and_deletes(conn):
    assert conn.tables() == [b"t"]
    assert sorted(conn.table("t").families()) == [b"f", b"g"]
    table = conn.table("t")
    with table.batch() as batch:
        for i in range(10):
            batch.put(b"row-%d" % i, {b"f:n": b"%d" % i, b"g:even": b"%d" % (i % 2 == 0)})
    assert table.row(b"row-3") == {b"f:n": b"3", b"g:even": b"0"}
    assert table.rows([b"row-1", b"missing", b"row-2"]) == [
        (b"row-1", {b"f:n": b"1", b"g:even": b"0"}), (b"row-2", {b"f:n": b"2", b"g:even": b"1"}),
    ]
    assert keys(table.scan(row_start=b"row-2", row_stop=b"row-5", batch_size=1)) == [b"row-2", b"row-3", b"row-4"]
    assert keys(table.scan(row_prefix=b"row-9")) == [b"row-9"]
    assert list(table.scan(row_prefix=b"row-1", columns=[b"g"])) == [(b"row-1", {b"g:even": b"0"})]
    assert [k for k, _ in table.scan(limit=2)] == [b"row-0", b"row-1"]
    table.delete(b"row-1")
    table.delete(b"row-2", columns=[b"g"])
    table.delete(b"row-3", columns=[b"f:n"])
    assert table.row(b"row-1") == {}
    assert table.row(b"row-2") == {b"f:n": b"2"}
    assert table.row(b"row-3") == {b"g:even": b"0"}
    conn.delete_table("t", disable=True)
    assert conn.tables() == []


def test_plain_happybase_counters_are_8_byte_big_endian(conn):
    table = conn.table("t")
    assert table.counter_inc(b"r", b"f:hits") == 1
    assert table.counter_inc(b"r", b"f:hits", 41) == 42
    assert table.counter_dec(b"r", b"f:hits", 2) == 40
    assert table.row(b"r") == {b"f:hits": (40).to_bytes(8, "big")}
    table.counter_set(b"r", b"f:hits", -5)
    assert table.counter_get(b"r", b"f:hits") == -5
    table.put(b"r", {b"f:text": b"abc"})
    says = {"dev": "not a 64-bit counter", "hbase": "Field is not a long, it's 3 bytes wide"}[conn.kind]
    with pytest.raises(Hbase_thrift.IOError, match=says):
        table.counter_inc(b"r", b"f:text")


def test_timestamps_follow_hbase(conn):
    table = conn.table("t")
    table.put(b"r", {b"f:a": b"new"}, timestamp=200)
    table.put(b"r", {b"f:a": b"old"}, timestamp=100)  # older than what is there: not the latest
    assert table.row(b"r", include_timestamp=True) == {b"f:a": (b"new", 200)}
    assert table.row(b"r", timestamp=201) == {b"f:a": b"new"}
    if conn.kind == "hbase":  # HBase keeps the family's 3 versions: a read before 200 sees the older one
        assert table.row(b"r", timestamp=200) == {b"f:a": b"old"}  # reads see [0, timestamp)
        assert table.cells(b"r", b"f:a", include_timestamp=True) == [(b"new", 200), (b"old", 100)]
    else:  # the dev server keeps one version per cell
        assert table.row(b"r", timestamp=200) == {}
        assert table.cells(b"r", b"f:a", include_timestamp=True) == [(b"new", 200)]
    table.delete(b"r", timestamp=150)  # deletes only what is not newer
    assert table.row(b"r") == {b"f:a": b"new"}
    assert table.cells(b"r", b"f:a", include_timestamp=True) == [(b"new", 200)]
    table.delete(b"r", timestamp=200)
    assert table.row(b"r") == {}


def test_one_mutate_rows_call_puts_before_it_deletes_like_hbase(conn):
    mutations = [Hbase_thrift.Mutation(isDelete=True, column=b"f:a"), Hbase_thrift.Mutation(column=b"f:a", value=b"1")]
    conn.client.mutateRows(name(conn, "t"), [Hbase_thrift.BatchMutation(row=b"rows", mutations=mutations)], {})
    assert conn.table("t").row(b"rows") == {}
    conn.client.mutateRowTs(name(conn, "t"), b"row", mutations, 1000, {})  # mutateRow deletes first
    if conn.kind == "hbase":
        # Both at timestamp 1000: HBase's delete marker hides a put of its own timestamp, whatever
        # the order (with the server's clock, a put in the delete's millisecond is hidden too).
        assert conn.table("t").row(b"row") == {}
        conn.client.mutateRowTs(name(conn, "t"), b"row", mutations[1:], 1001, {})
    assert conn.table("t").row(b"row") == {b"f:a": b"1"}  # the dev server keeps no delete markers


def test_scan_batching_sorted_columns_and_the_other_scanner_calls(conn):
    table = conn.table("t")
    table.put(b"a", {b"f:1": b"x", b"f:2": b"y", b"g:3": b"z"})
    table.put(b"ab", {b"f:1": b"x"})
    table.put(b"b", {b"f:1": b"x"})
    assert list(table.scan(row_stop=b"ab", scan_batching=2)) == [
        (b"a", {b"f:1": b"x", b"f:2": b"y"}), (b"a", {b"g:3": b"z"})]
    assert [list(cells) for _, cells in table.scan(row_stop=b"ab", sorted_columns=True)] == [[b"f:1", b"f:2", b"g:3"]]
    client, t = conn.client, name(conn, "t")
    sid = client.scannerOpenWithPrefix(t, b"a", [b"f:1"], {})
    assert [r.row for r in client.scannerGet(sid) + client.scannerGetList(sid, 10)] == [b"a", b"ab"]
    assert client.scannerGet(sid) == []
    client.scannerClose(sid)
    sid = client.scannerOpenWithStop(t, b"ab", b"b", None, {})
    assert [r.row for r in client.scannerGetList(sid, 10)] == [b"ab"]
    client.scannerClose(sid)
    with pytest.raises(Hbase_thrift.IllegalArgument, match="scanner ID is invalid"):
        client.scannerGet(sid)


def test_errors_are_hbase_errors_and_keep_the_connection(conn):
    table = conn.table("t")
    with pytest.raises(Hbase_thrift.IOError, match="TableNotFoundException: (.*_)?nope"):
        conn.table("nope").row(b"r")
    with pytest.raises(Hbase_thrift.IOError, match="NoSuchColumnFamilyException"):
        table.put(b"r", {b"h:a": b"1"})
    table.put(b"r", {b"f:a": b"1"})
    if conn.kind == "hbase":  # HBase has filters and reversed scans; the dev server refuses them
        assert list(table.scan(filter=b"KeyOnlyFilter()")) == [(b"r", {b"f:a": b""})]
        assert keys(table.scan(row_start=b"z", reverse=True)) == [b"r"]
    else:
        with pytest.raises(Hbase_thrift.IOError, match="filterString is not supported"):
            list(table.scan(filter=b"KeyOnlyFilter()"))
        with pytest.raises(Hbase_thrift.IOError, match="reversed scans are not supported"):
            list(table.scan(row_start=b"z", reverse=True))
    with pytest.raises(Hbase_thrift.AlreadyExists):
        conn.create_table("t", {"f": {}})
    # Refused by the dev server as an IllegalArgument, by HBase's table sanity checks as an IOError.
    with pytest.raises((Hbase_thrift.IllegalArgument, Hbase_thrift.IOError), match="at least one column family"):
        conn.client.createTable(name(conn, "empty"), [])
    with pytest.raises(Hbase_thrift.IOError, match="TableNotDisabledException"):
        conn.delete_table("t")
    if conn.kind == "hbase":  # HBase 2's Thrift server no longer has the call at all
        with pytest.raises(TApplicationException) as caught:
            conn.client.getRowOrBefore(name(conn, "t"), b"r", b"f")
        assert caught.value.type == TApplicationException.UNKNOWN_METHOD
    else:
        with pytest.raises(Hbase_thrift.IOError, match="not supported"):
            conn.client.getRowOrBefore(name(conn, "t"), b"r", b"f")
    assert conn.client.getTableRegions(name(conn, "nope")) == []
    conn.disable_table("t")
    assert not conn.is_table_enabled("t")
    with pytest.raises(Hbase_thrift.IOError, match="TableNotEnabledException"):
        table.row(b"r")
    conn.enable_table("t")
    table.put(b"r", {b"f:a": b"2"})  # the same connection still works after all of the above
    assert table.row(b"r") == {b"f:a": b"2"}


# the command ----------------------------------------------------------------------------------


def test_the_command_serves_a_data_file_until_terminated(tmp_path):
    path, port = str(tmp_path / "tables.db"), free_port()
    command = [sys.executable, "-m", "swarm.hbase_dev", "--port", str(port), "--data", path, "--scanner-timeout", "5"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        tables = HBaseTables(f"hbase://127.0.0.1:{port}?retries=8&backoff=0.1&backoff_max=1")
        tables.create_table("t", ["f"], splits=[b"m"])
        tables.apply([Put("t", b"r", {b"f:a": b"1"})])
        tables.close()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "not a production store" in err
    stored = EmbeddedTables(path)
    assert (stored.regions("t"), stored.row("t", b"r")) == ([(b"", b"m"), (b"m", b"")], {b"f:a": b"1"})
    stored.close()
