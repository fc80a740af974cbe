"""Several Thrift servers in one ``hbase://`` URL: when one dies, the store goes on through another.

Two in-process development servers serve the same data file, as two Thrift
servers serve the same HBase; the tests stop one of them under the store.
"""
from __future__ import annotations

import logging
import threading

import pytest

from swarm.effects import Put
from swarm.errors import BackendError, ConfigError
from swarm.hbase_dev import DevServer
from swarm.tables.hbase import HBaseTables
from swarm.urls import check_url, redact
from tests.support.contracts.table import fill, keys, scan_interrupted

FAST_RETRY = "retries=6&backoff=0.01&backoff_max=0.1"


@pytest.fixture
def servers(tmp_path):
    path = str(tmp_path / "tables.db")
    pair = [DevServer(path), DevServer(path)]
    for server in pair:
        server.start()
    yield pair
    for server in pair:
        server.stop()


def url_of(*servers: DevServer, options: str = FAST_RETRY) -> str:
    return "hbase://" + ",".join(f"{s.host}:{s.port}" for s in servers) + f"?{options}"


@pytest.fixture
def tables(servers):
    store = HBaseTables(url_of(*servers))
    yield store
    store.close()


def name(server: DevServer) -> str:
    return f"{server.host}:{server.port}"


def test_the_url_names_the_servers_in_order():
    tables = HBaseTables("hbase://thrift1:9091,thrift2,[::1]:9093?pool_size=2")
    assert tables.servers == [("thrift1", 9091), ("thrift2", 9090), ("::1", 9093)]
    assert (tables.host, tables.port, tables.where) == ("thrift1", 9091, "thrift1:9091,thrift2:9090,[::1]:9093")
    assert tables.pool_size == 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("hbase://h1:9090,,h2", "tables: hbase://h1:9090,,h2: server 2 is empty"),
        ("hbase://h1:9090,:9091", "tables: hbase://h1:9090,:9091: server 2 has no host"),
        ("hbase://h1:9090,h2:x9", "tables: hbase://h1:9090,h2:***: the port of server 2 (h2) is not a number from"),
        ("hbase://h1,h2:70000", "tables: hbase://h1,h2:70000: the port of server 2 (h2) is not a number from 1 to"),
        ("hbase://h1,h2:0", "the port of server 2 (h2) is not a number"),
        ("hbase://h1,h!2", "server 2 has a host that is not a name or address"),
        ("hbase://h1:9090,h1", "server 2 (h1:9090) is named twice"),
    ],
)
def test_a_bad_server_list_is_refused_naming_the_bad_server(url, message):
    with pytest.raises(ConfigError) as caught:
        HBaseTables(url)
    assert str(caught.value).startswith(message) if message.startswith("tables:") else message in str(caught.value)
    key_message = message.split(": ", 2)[-1] if message.startswith("tables:") else message
    with pytest.raises(ConfigError, match="backends.tables: ") as checked:  # what loading the config says
        check_url("backends.tables", url)
    assert key_message in str(checked.value)


def test_a_password_is_never_shown():
    for url in ("hbase://h1,admin:s3cret@h2", "hbase://admin:s3cret@h1,h2:9090", "hbase://h1,admin:s3cret"):
        with pytest.raises(ConfigError) as caught:
            HBaseTables(url)
        assert "s3cret" not in str(caught.value), str(caught.value)
        assert "s3cret" not in redact(url)


def test_redact_shows_a_server_list_as_written():
    assert redact("hbase://h1:9090,h2:9091?table_prefix=n") == "hbase://h1:9090,h2:9091?table_prefix=n"
    check_url("backends.tables", "hbase://h1:9090,h2:9091?table_prefix=n")  # a good list passes the config check


def test_calls_go_to_the_first_server_while_it_answers(servers, tables):
    tables.create_table("t", ["f"])
    fill(tables, "t", 10)
    assert tables._server == 0
    assert servers[0].running and len(servers[0]._clients) >= 1 and not servers[1]._clients


def test_when_the_first_server_dies_reads_and_writes_go_on_through_the_second(servers, tables, caplog):
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 20)
    servers[0].stop()
    with caplog.at_level(logging.WARNING, logger="swarm.tables.hbase"):
        tables.apply([Put("t", b"k9999", {b"f:v": b"late"})])
    assert keys(tables.scan("t")) == [*names, b"k9999"]
    assert tables.row("t", b"k9999") == {b"f:v": b"late"}
    assert f"HBase at {name(servers[0])}: write to t failed" in caplog.text
    assert f"retrying through {name(servers[1])}" in caplog.text


def test_a_scan_goes_on_through_the_other_server_with_every_row_once(servers, tables):
    tables.create_table("t", ["f"])
    names = fill(tables, "t", 100)
    assert scan_interrupted(tables, "t", 7, at={10: servers[0].stop}) == names  # stopped inside a batch


def test_a_first_server_down_from_the_start_is_passed_over(servers):
    servers[0].stop()
    tables = HBaseTables(url_of(*servers))
    tables.create_table("t", ["f"])
    assert tables.tables() == ["t"]
    tables.close()


def test_round_robin_back_to_the_first_when_the_second_dies_in_turn(servers, tables):
    tables.create_table("t", ["f"])
    fill(tables, "t", 5)
    servers[0].stop()
    assert len(keys(tables.scan("t"))) == 5
    servers[0].start()
    servers[1].stop()
    assert len(keys(tables.scan("t"))) == 5
    assert tables._server == 0


def test_every_server_down_ends_in_a_backend_error_naming_them_all(servers):
    tables = HBaseTables(url_of(*servers, options="retries=3&backoff=0.01"))
    for server in servers:
        server.stop()
    with pytest.raises(BackendError) as caught:
        tables.tables()
    assert str(caught.value).startswith(f"HBase at {name(servers[0])},{name(servers[1])}: list tables failed 4 times")
    tables.close()


def test_many_threads_move_on_together_and_nothing_is_lost(servers, tables):
    tables.create_table("t", ["f"])
    fill(tables, "t", 1)  # the pool is open on the first server
    errors: list[BaseException] = []
    started = threading.Barrier(9)

    def work(n: int) -> None:
        try:
            started.wait()
            for i in range(20):
                tables.apply([Put("t", b"%d-%03d" % (n, i), {b"f:a": b"%d" % i})])
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    started.wait()
    servers[0].stop()
    for t in threads:
        t.join()
    assert errors == []
    assert len(keys(tables.scan("t"))) == 1 + 8 * 20
    assert tables._server == 1  # every thread saw the first server fail; the store moved once


def test_the_server_left_behind_keeps_no_idle_connection(servers, tables):
    tables.create_table("t", ["f"])
    fill(tables, "t", 1)
    tables._failover(0)  # as after a time-out: the first server is still up
    assert tables.tables() == ["t"]
    for _ in range(100):
        if not servers[0]._clients:
            break
        threading.Event().wait(0.02)
    assert not servers[0]._clients and servers[1]._clients


def test_a_server_that_only_dropped_its_connections_keeps_the_store(servers, tables, caplog):
    # As HBase's Thrift server does with a connection idle past hbase.thrift.server.socket.read.timeout.
    tables.create_table("t", ["f"])
    fill(tables, "t", 3)
    port = servers[0].port
    servers[0].stop()
    assert servers[0].start() == port
    with caplog.at_level(logging.WARNING, logger="swarm.tables.hbase"):
        assert len(keys(tables.scan("t"))) == 3
    assert tables._server == 0
    assert "retrying through" not in caplog.text


def test_config_check_says_which_servers_answer(servers, tmp_path):
    from swarm.check import check_tables

    url = url_of(*servers, options="table_prefix=n")
    HBaseTables(url).create_table("t", ["f"])
    assert check_tables(url, timeout=10).endswith(": 1 table(s): t; all 2 Thrift servers answered")
    servers[1].stop()
    said = check_tables(url, timeout=10)
    assert said.startswith(f"{url}: 1 table(s): t; 1 of 2 Thrift servers answered; {name(servers[1])} did not answer")
    servers[0].stop()
    with pytest.raises(BackendError, match="no Thrift server answered"):
        check_tables(url, timeout=10)
