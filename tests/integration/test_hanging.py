"""No call hangs forever: each backend's real client, behind a fault proxy on loopback, against the real service.

The proxy (``tests.support.faultproxy``) black-holes the network: open connections stall with
no FIN and no RST, new ones are accepted and never answered (``blackhole``), or their SYN goes
unanswered (``unreachable``). Every call made meanwhile must end, with Swarm's own error, within
a bound derived from the timeouts the test configures (small ones, so that the file runs in
seconds); each runs under a watchdog that fails the test, rather than hang the suite, if it has
not returned within three times its bound. Then the network comes back, and so do the calls.

Scenario 4 of issue 18: an HBase store on two Thrift servers (two proxies in front
of the same Thrift server) whose first one black-holes after some calls succeeded: calls end by
their time-out and go on through the other server, and reads see what was written.
"""
from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Any, Callable

import pytest

from swarm.brokers.rabbitmq import BlockingRabbitBroker, RabbitBroker
from swarm.effects import Put
from swarm.errors import BackendError
from swarm.ledgers.mysql import MysqlLedger
from swarm.tables.hbase import HBaseTables
from tests.support.contracts.broker import Q, Recorder, serving
from tests.support.faultproxy import BLACKHOLE, UNREACHABLE, FaultProxy
from tests.support.hbase import HOST
from tests.support.mysql import PORT as MYSQL_PORT
from tests.support.mysql import mysql_url
from tests.support.rabbitmq import PORT as AMQP_PORT
from tests.support.rabbitmq import amqp_url
from tests.support.waiting import wait_until

SLACK = 1.5  # seconds a bound allows beyond the timeouts it adds up: thread switches, a busy machine
WATCHDOG = 3  # a call still running after this many times its bound would hang: the test fails instead


@dataclasses.dataclass
class Ended:
    seconds: float
    error: BaseException | None = None
    value: Any = None


def within(bound: float, call: Callable[[], Any]) -> Ended:
    """Run ``call`` on a thread of its own; fail the test if it has not returned after ``WATCHDOG`` x ``bound``."""
    ended: list[Ended] = []

    def run() -> None:
        start = time.monotonic()
        try:
            value = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            ended.append(Ended(time.monotonic() - start, error=exc))
        else:
            ended.append(Ended(time.monotonic() - start, value=value))

    thread = threading.Thread(target=run, name="hanging-call", daemon=True)
    thread.start()
    thread.join(WATCHDOG * bound)
    if not ended:
        pytest.fail(f"the call has not returned after {WATCHDOG * bound:.1f} s ({WATCHDOG} x its bound of "
                    f"{bound:.1f} s): it would hang")
    assert ended[0].seconds <= bound, f"the call took {ended[0].seconds:.1f} s, over its bound of {bound:.1f} s"
    return ended[0]


def fails_in_time(bound: float, call: Callable[[], Any], at_least: float) -> BackendError:
    """``call`` raises ``BackendError`` within ``bound`` seconds, and not before ``at_least``: a time-out ended it."""
    ended = within(bound, call)
    assert isinstance(ended.error, BackendError), f"expected a BackendError, got {ended.error or ended.value!r}"
    assert ended.seconds >= at_least, f"ended after {ended.seconds:.2f} s, before its time-outs ({at_least:.2f} s)"
    return ended.error


@pytest.fixture
def proxy_to():
    """``proxy_to(port)``: a fault proxy in front of the local service on ``port``, closed after the test."""
    made: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        made.append(FaultProxy((HOST, port)))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


# MySQL ---------------------------------------------------------------------------------------------

# connect_timeout bounds the TCP connect and the login's reads, read_timeout every read after (MysqlLedger._connect).
MYSQL_TIMEOUTS = dict(connect_timeout=1, read_timeout=1, write_timeout=1, attempts=3, retry_for=30.0,
                      backoff=0.05, max_backoff=0.2)


def mysql_ledger(database: str, port: int) -> MysqlLedger:
    ledger = MysqlLedger(mysql_url(database, port=port))
    for name, value in MYSQL_TIMEOUTS.items():
        setattr(ledger, name, value)
    return ledger


def mysql_bound(ledger: MysqlLedger) -> float:
    """Each attempt: connect (TCP, then the login's read), a statement's write and read; the pauses between."""
    attempt = 2 * ledger.connect_timeout + ledger.read_timeout + ledger.write_timeout
    pauses = sum(min(ledger.max_backoff, ledger.backoff * 2**i) for i in range(ledger.attempts - 1))
    return ledger.attempts * attempt + pauses + SLACK


def test_mysql_a_call_on_a_connection_gone_silent_ends_in_a_backend_error(mysql_db, proxy_to):
    proxy = proxy_to(MYSQL_PORT)
    ledger = mysql_ledger(mysql_db, proxy.port)
    try:
        assert ledger.stored_schema_version() is None  # connected through the proxy
        proxy.blackhole()
        error = fails_in_time(mysql_bound(ledger), ledger.stored_schema_version,
                              at_least=ledger.attempts * ledger.read_timeout * 0.9)
        assert "gave up after 3 attempts" in str(error) and "Lost connection" in str(error)
        proxy.passing()
        assert within(mysql_bound(ledger), ledger.stored_schema_version).value is None
    finally:
        proxy.passing()
        ledger.close()


@pytest.mark.parametrize("mode", [BLACKHOLE, UNREACHABLE])
def test_mysql_connecting_to_a_silent_server_ends_in_a_backend_error(mysql_db, proxy_to, mode):
    """``blackhole``: the login's read times out; ``unreachable``: the TCP connect does. Both by connect_timeout."""
    proxy = proxy_to(MYSQL_PORT)
    proxy.set_mode(mode)
    ledger = mysql_ledger(mysql_db, proxy.port)
    ledger.read_timeout = 30  # not what bounds a connect: were the login's read left to it, this would take 90 s
    try:
        connecting = ledger.attempts * (2 * ledger.connect_timeout + ledger.max_backoff) + SLACK
        error = fails_in_time(connecting, ledger.stored_schema_version,
                              at_least=ledger.attempts * ledger.connect_timeout * 0.9)
        assert "gave up after 3 attempts" in str(error)
        assert ("Lost connection" if mode == BLACKHOLE else "Can't connect") in str(error)
        proxy.passing()
        assert within(mysql_bound(ledger), ledger.stored_schema_version).value is None
    finally:
        proxy.passing()
        ledger.close()


# RabbitMQ ------------------------------------------------------------------------------------------

# socket_timeout bounds the TCP connect, stack_timeout the whole handshake, reply_timeout a reply,
# heartbeat a connection that nothing comes through (pika checks every heartbeat + 5 s).
AMQP_TIMEOUTS = dict(socket_timeout=1, stack_timeout=2, reply_timeout=1, heartbeat=1, blocked_connection_timeout=2)


def amqp(vhost: str, port: int) -> str:
    return amqp_url(vhost, port=port, **AMQP_TIMEOUTS)


def test_rabbitmq_a_call_on_a_connection_gone_silent_ends_in_a_backend_error(amqp_vhost, proxy_to):
    proxy = proxy_to(AMQP_PORT)
    broker = BlockingRabbitBroker(amqp(amqp_vhost, proxy.port))
    try:
        broker.declare([Q])
        proxy.blackhole()
        reply = AMQP_TIMEOUTS["reply_timeout"]
        error = fails_in_time(reply + SLACK, lambda: broker.depth(Q), at_least=reply * 0.9)
        assert "no reply within 1 s" in str(error)
        proxy.passing()
        # the same connection, or a new one if the broker has dropped it meanwhile
        assert within(AMQP_TIMEOUTS["stack_timeout"] + reply + SLACK, lambda: broker.depth(Q)).value == 0
    finally:
        proxy.passing()
        broker.close()


@pytest.mark.parametrize("mode", [BLACKHOLE, UNREACHABLE])
def test_rabbitmq_connecting_to_a_silent_server_ends_in_a_backend_error(amqp_vhost, proxy_to, mode):
    """``blackhole``: the handshake outlasts stack_timeout; ``unreachable``: the TCP connect socket_timeout."""
    proxy = proxy_to(AMQP_PORT)
    proxy.set_mode(mode)
    broker = BlockingRabbitBroker(amqp(amqp_vhost, proxy.port))
    try:
        waits = AMQP_TIMEOUTS["stack_timeout" if mode == BLACKHOLE else "socket_timeout"]
        error = fails_in_time(waits + SLACK, broker.ping, at_least=waits * 0.9)
        assert "cannot connect" in str(error)
        proxy.passing()
        assert within(AMQP_TIMEOUTS["stack_timeout"] + SLACK, broker.ping).value.startswith("RabbitMQ")
    finally:
        proxy.passing()
        broker.close()


def test_rabbitmq_a_consumer_notices_a_silent_connection_by_its_heartbeat_and_consumes_again(
        amqp_vhost, proxy_to, caplog):
    """Nothing waits on a reply while a consumer idles: the heartbeat alone ends its connection."""
    proxy = proxy_to(AMQP_PORT)
    broker = RabbitBroker(amqp(amqp_vhost, proxy.port))
    direct = BlockingRabbitBroker(amqp_url(amqp_vhost))  # publishes around the proxy
    heartbeat = AMQP_TIMEOUTS["heartbeat"]
    noticed = 2 * (heartbeat + 5) + SLACK  # pika finds a check interval with nothing received, at worst two
    try:
        broker.declare([Q])
        rec = Recorder(settle=lambda d: d.ack())
        broker.consume(Q, 1, rec)
        with caplog.at_level(logging.WARNING, logger="swarm.brokers.rabbitmq"), serving(broker):
            direct.publish([(Q, b"before")])
            wait_until(lambda: rec.bodies == [b"before"], "the first delivery")
            proxy.blackhole()
            lost = wait_until(lambda: any("no heartbeat" in r.getMessage() for r in caplog.records),
                              "serve to notice the silent connection", timeout=WATCHDOG * noticed)
            assert heartbeat * 0.9 <= lost <= noticed
            proxy.passing()
            direct.publish([(Q, b"after")])
            wait_until(lambda: rec.bodies == [b"before", b"after"], "a delivery on a new connection",
                       timeout=WATCHDOG * noticed)
    finally:
        proxy.passing()
        broker.close()
        direct.close()


def test_rabbitmq_connections_have_tcp_keepalive(amqp_vhost):
    broker = BlockingRabbitBroker(amqp_url(amqp_vhost))
    try:
        broker.ping()
        sock: socket.socket = broker._conn._pika._transport._sock  # pika keeps its socket to itself
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60
    finally:
        broker.close()


# HBase ---------------------------------------------------------------------------------------------

TIMEOUT_MS = 1000
HBASE_OPTIONS = f"timeout_ms={TIMEOUT_MS}&backoff=0.05&backoff_max=0.2"


def hbase(prefix: str, *proxies: FaultProxy, retries: int = 2) -> HBaseTables:
    servers = ",".join(p.address for p in proxies)
    return HBaseTables(f"hbase://{servers}?table_prefix={prefix}&retries={retries}&{HBASE_OPTIONS}")


def hbase_bound(tables: HBaseTables, attempts: int | None = None) -> float:
    """Each attempt: the call's time-out, then the pool's new connection's (a connect, bounded alike); the pauses."""
    attempts = tables.retries + 1 if attempts is None else attempts
    pauses = sum(min(tables.backoff_max, tables.backoff * 2**i) for i in range(attempts - 1))
    return attempts * 2 * tables.timeout_ms / 1000 + pauses + SLACK


def test_hbase_a_call_on_a_connection_gone_silent_ends_in_a_backend_error(hbase_server, proxy_to):
    proxy = proxy_to(hbase_server.port)
    tables = hbase(hbase_server.prefix, proxy)
    try:
        tables.tables()
        proxy.blackhole()
        timeout = tables.timeout_ms / 1000
        error = fails_in_time(hbase_bound(tables), tables.tables, at_least=(tables.retries + 1) * timeout * 0.9)
        assert "failed 3 times" in str(error) and "timed out" in str(error)
        proxy.passing()
        within(hbase_bound(tables), tables.tables)
    finally:
        proxy.passing()
        tables.close()


@pytest.mark.parametrize("mode", [BLACKHOLE, UNREACHABLE])
def test_hbase_connecting_to_a_silent_server_ends_in_a_backend_error(hbase_server, proxy_to, mode):
    """``blackhole``: the connection is taken and each call times out; ``unreachable``: each connect does."""
    proxy = proxy_to(hbase_server.port)
    proxy.set_mode(mode)
    tables = hbase(hbase_server.prefix, proxy)
    try:
        timeout = tables.timeout_ms / 1000
        error = fails_in_time(hbase_bound(tables), tables.tables, at_least=(tables.retries + 1) * timeout * 0.9)
        assert "failed 3 times" in str(error)
        assert ("timed out" if mode == BLACKHOLE else "Could not connect") in str(error)
        proxy.passing()
        within(hbase_bound(tables), tables.tables)
    finally:
        proxy.passing()
        tables.close()


def rows(first: int, last: int) -> list[Put]:
    return [Put("events", b"k%02d" % i, {b"f:v": b"value %d" % i}) for i in range(first, last)]


def test_hbase_a_thrift_server_gone_silent_mid_run_fails_over_and_reads_see_every_write(hbase_server, proxy_to):
    """Scenario 4: calls end by their time-out and go on through the other server, each way round."""
    a, b = proxy_to(hbase_server.port), proxy_to(hbase_server.port)
    tables = hbase(hbase_server.prefix, a, b, retries=4)
    timeout = tables.timeout_ms / 1000
    # two time-outs on the silent server (it takes a new connection, so it gets a second try), then the other
    failover = hbase_bound(tables, attempts=3)
    try:
        tables.create_table("events", ["f"])
        tables.apply(rows(0, 10))
        assert tables.row("events", b"k03") == {b"f:v": b"value 3"}
        assert b.accepted == 0  # everything so far went through the first server

        a.blackhole()
        ended = within(failover, lambda: tables.apply(rows(10, 20)))
        assert ended.error is None, f"the write failed: {ended.error!r}"
        assert ended.seconds >= 2 * timeout * 0.9  # ended by its time-outs on a
        assert b.accepted >= 1
        quick = within(timeout, lambda: tables.row("events", b"k15"))  # the store stays on b: no time-out now
        assert quick.value == {b"f:v": b"value 15"}

        # and back: b goes silent in the middle of a scan, which goes on through a from the next key
        a.passing()
        scan = tables.scan("events", batch_size=5)
        seen = [next(scan) for _ in range(5)]
        b.blackhole()
        ended = within(failover, lambda: seen.extend(scan))
        assert ended.error is None, f"the scan failed: {ended.error!r}"
        assert ended.seconds >= 2 * timeout * 0.9
        assert seen == [(put.row, dict(put.cells)) for put in rows(0, 20)]  # every row once, as written
    finally:
        a.passing()
        b.passing()
        tables.close()


@pytest.mark.parametrize("mode", [BLACKHOLE, UNREACHABLE])
def test_hbase_a_store_whose_first_server_is_silent_from_the_start_goes_on_through_the_next(
        hbase_server, proxy_to, mode):
    """``unreachable``: the connect times out, the next server at once; ``blackhole``: two calls time out first."""
    a, b = proxy_to(hbase_server.port), proxy_to(hbase_server.port)
    a.set_mode(mode)
    tables = hbase(hbase_server.prefix, a, b, retries=4)
    try:
        timeout = tables.timeout_ms / 1000
        ended = within(hbase_bound(tables, attempts=3), lambda: tables.create_table("events", ["f"]))
        assert ended.error is None, f"the call failed: {ended.error!r}"
        assert ended.seconds >= (2 if mode == BLACKHOLE else 1) * timeout * 0.9
        tables.apply(rows(0, 3))
        assert [key for key, _ in tables.scan("events")] == [b"k00", b"k01", b"k02"]
        assert a.accepted == 0 and b.accepted >= 1
    finally:
        a.passing()
        b.passing()
        tables.close()


# all three: slow is not dead ------------------------------------------------------------------------


def test_a_slow_network_under_the_time_outs_fails_no_call(mysql_db, amqp_vhost, hbase_server, proxy_to):
    """100 ms each way, under time-outs of 1 s: every call succeeds, only later."""
    to_mysql, to_amqp, to_hbase = proxy_to(MYSQL_PORT), proxy_to(AMQP_PORT), proxy_to(hbase_server.port)
    for proxy in (to_mysql, to_amqp, to_hbase):
        proxy.delay(100)
    ledger = mysql_ledger(mysql_db, to_mysql.port)
    broker = BlockingRabbitBroker(amqp(amqp_vhost, to_amqp.port))
    tables = hbase(hbase_server.prefix, to_hbase)
    try:
        assert within(mysql_bound(ledger), ledger.stored_schema_version).value is None
        assert within(AMQP_TIMEOUTS["stack_timeout"] + SLACK, broker.ping).value.startswith("RabbitMQ")
        assert within(hbase_bound(tables), tables.tables).value == []
        assert within(0.2 + SLACK, tables.tables).seconds >= 0.2  # one round trip, delayed both ways
    finally:
        ledger.close()
        broker.close()
        tables.close()
