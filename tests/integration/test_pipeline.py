"""The example job on RabbitMQ + MariaDB + HBase (and its Thrift server), workers as OS processes.

Each test breaks something for real in the middle of the run; the summary
must still equal the single-process reference, with no row counted twice.
"""
from __future__ import annotations

import signal
import time

import pytest

from swarm.ledger import MessageState
from tests.support.hbase import HBase, TestHBase
from tests.support.mysql import kill_mysql_sessions
from tests.support.rabbitmq import rabbitmqctl
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

EVENTS = 12_000


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 16, "sleep": 0.3})


def run_id() -> str:
    return f"{JOB}@date={DATE}"


def finish(site: Site, master) -> None:
    """Wait for the master to end; the run must be done and the summary exact, nothing counted twice."""
    try:
        code = master.wait(timeout=240)
    except Exception:
        master.kill()
        raise AssertionError(f"master did not finish\n{site.log_tail()}") from None
    assert code == 0, site.log_tail()
    ledger = site.ledger()
    run = ledger.get_run(run_id())
    assert run.status == "done", run.error
    assert ledger.counters(run.id) == {"rows": EVENTS, "merchants": 40}
    assert set(ledger.counts(run.id)) == {MessageState.DONE}
    written, expected = site.exact()
    assert len(expected) == 40
    assert written == expected


def claimed(site: Site) -> int:
    return site.ledger().counts(run_id()).get(MessageState.CLAIMED, 0)


def test_the_job_on_the_real_services_with_worker_processes(site):
    for _ in range(3):
        site.start_worker()
    finish(site, site.start_master())


def test_a_worker_killed_mid_message_loses_nothing(site):
    victim = site.start_worker()
    site.start_worker()
    master = site.start_master()
    wait_until(lambda: claimed(site) > 0, "a message in hand", timeout=120, every=0.1)
    time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    site.start_worker()
    finish(site, master)


@pytest.mark.exclusive
def test_the_broker_restarted_mid_run(site):
    site.start_worker()
    site.start_worker()
    master = site.start_master()
    wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.DONE, 0) >= 3,
               "some progress", timeout=120, every=0.1)
    rabbitmqctl("stop_app")
    try:
        time.sleep(2)
    finally:
        rabbitmqctl("start_app")
    finish(site, master)
    assert all(w.poll() is None for w in site.workers), "workers must ride out the restart"


def test_mysql_connections_dropped_mid_run(site):
    site.start_worker()
    site.start_worker()
    master = site.start_master()
    wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.DONE, 0) >= 3,
               "some progress", timeout=120, every=0.1)
    assert kill_mysql_sessions(site.database) > 0
    time.sleep(1)
    kill_mysql_sessions(site.database)
    finish(site, master)


def progressed(site: Site, done: int = 3) -> None:
    wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.DONE, 0) >= done, "some progress",
               timeout=120, every=0.1)


@pytest.mark.own_thrift
def test_the_thrift_server_restarted_mid_run(site):
    site.start_worker()
    site.start_worker()
    master = site.start_master()
    progressed(site)
    site.hbase.stop()
    time.sleep(1)
    site.hbase.start()
    finish(site, master)


@pytest.mark.own_thrift
def test_the_thrift_server_killed_mid_run(site):
    site.start_worker()
    site.start_worker()
    master = site.start_master()
    progressed(site)
    site.hbase.kill()  # SIGKILL: its clients' connections and open scanners die with it
    time.sleep(1)
    site.hbase.start()
    finish(site, master)
    assert all(w.poll() is None for w in site.workers), "workers must ride out the crash"


@pytest.fixture
def private_hbase(tmp_path_factory):
    """An HBase of the test's own (data dir, ZooKeeper and Thrift ports): stopping it disturbs nobody else."""
    hbase = HBase.private(tmp_path_factory.mktemp("hbase"))
    hbase.start()
    yield hbase
    hbase.stop(kill=True)  # its data goes with the test's temporary folder


def test_hbase_stopped_and_started_mid_run(tmp_path, amqp_vhost, mysql_db, private_hbase):
    """HBase itself (master, region server, ZooKeeper) goes away while its Thrift server stays up."""
    site = Site(tmp_path, amqp_vhost, mysql_db, TestHBase(private_hbase), options={"chunks": 16, "sleep": 0.3})
    try:
        site.init_ledger()
        site.generate(EVENTS)
        site.start_worker()
        site.start_worker()
        master = site.start_master()
        progressed(site)
        private_hbase.stop_master()  # cleanly: regions flushed and closed, as an operator stops HBase
        time.sleep(2)
        private_hbase.start_master()  # returns once HBase answers through its Thrift server again
        finish(site, master)
        assert all(w.poll() is None for w in site.workers), "workers must ride out the outage"
    finally:
        site.stop()
