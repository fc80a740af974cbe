"""The fleet under a real supervisord, from the config `swarm deploy supervisord` renders, and cron's wrapper.

A worker that supervisord stops mid-message drains: it finishes what it
holds, exits 0, and the night's summary is still exact.
"""
from __future__ import annotations

import os
import stat
import subprocess
import time

import pymysql
import pytest

from swarm.ledger import MessageState
from tests.support import ROOT
from tests.support.mysql import MYSQL
from tests.support.rabbitmq import FaultProxy, amqp_url, ready
from tests.support.site import DATE, JOB, Site
from tests.support.supervisord import BIN, RUN, Supervisord, assert_exact
from tests.support.waiting import wait_until

EVENTS = 8_000
NIGHTLY = ROOT / "deploy" / "swarm-nightly"


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 16, "sleep": 1.0})


@pytest.fixture
def supervised(site):
    started: list[Supervisord] = []

    def start(processes: int, **kw) -> Supervisord:
        sv = Supervisord(site, processes, **kw)
        started.append(sv)
        sv.start()
        return sv

    yield start
    for sv in started:
        sv.stop()


def messages(site: Site, state: str) -> list[dict]:
    conn = pymysql.connect(**MYSQL, database=site.database, cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, holder, attempts, updated_at FROM swarm_messages WHERE run_id = %s AND state = %s",
                        (RUN, state))
            return list(cur.fetchall())
    finally:
        conn.close()


def nightly(site: Site, log_name: str) -> subprocess.Popen:
    """cron's wrapper around the master, as deploy/crontab runs it."""
    args = ["sh", str(NIGHTLY), "--swarm", str(BIN / "swarm"), "--config", str(site.config),
            "--log", str(site.logs / log_name), "--date", DATE, "--pause", "1", JOB]
    return subprocess.Popen(args, cwd=site.tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_worker_stopped_by_supervisord_drains_and_nothing_is_lost(site, supervised):
    sv = supervised(3)
    wait_until(lambda: len(sv.running()) == 3, "three workers running", timeout=30, every=0.1)
    master = nightly(site, "nightly.log")

    wait_until(lambda: messages(site, MessageState.CLAIMED), "a worker holding a message", timeout=120, every=0.1)
    [held, *_] = messages(site, MessageState.CLAIMED)
    victim = sv.by_pid(int(held["holder"].split(":")[1]))  # holder is host:pid:thread
    stop_sent = time.time()
    assert sv.rpc().stopProcess(f"swarm-worker:{victim}", True)  # TERM, then wait for the exit

    info = sv.workers()[victim]
    assert (info["statename"], info["exitstatus"]) == ("STOPPED", 0), sv.log_tail()
    assert f"stopped: {victim} (exit status 0)" in (sv.logs / "supervisord.log").read_text()
    worker_log = (sv.logs / f"{victim}.log").read_text()
    assert "draining" in worker_log and "Traceback" not in worker_log

    second = nightly(site, "nightly-second.log")  # cron started twice: the second one steps aside
    assert second.wait(timeout=60) == 3
    assert f"another master holds run {RUN}" in second.communicate()[1]

    try:
        assert master.wait(timeout=240) == 0, (site.logs / "nightly.log").read_text()
    finally:
        if master.poll() is None:
            master.kill()
    assert_exact(site, EVENTS)
    # The message in hand when TERM came was finished by the worker that held it, once.
    [finished] = [m for m in messages(site, MessageState.DONE) if m["id"] == held["id"]]
    assert finished["holder"] == held["holder"] and finished["attempts"] == 1
    assert finished["updated_at"] > stop_sent


def test_a_worker_started_while_the_broker_is_down_waits_for_it(site, supervised):
    proxy = FaultProxy()
    proxy.refusing = True
    try:
        sv = supervised(1, env={"SWARM_BACKENDS_BROKER": amqp_url(site.vhost, port=proxy.port)})
        [name] = sv.workers()
        log = sv.logs / f"{name}.log"

        def retried() -> bool:
            assert sv.workers()[name]["statename"] != "FATAL", sv.log_tail()  # supervisord gave up on it
            return log.exists() and log.read_text().count("cannot reach the broker") >= 3

        wait_until(retried, "the worker to retry", timeout=60, every=0.1)
        first = sv.workers()[name]
        assert first["statename"] == "RUNNING", sv.log_tail()  # not BACKOFF or FATAL

        proxy.refusing = False
        queue = f"swarm.{JOB}.scan"
        wait_until(lambda: _declared(site.vhost, queue), "the worker to declare its queues", timeout=60, every=0.1)
        assert sv.workers()[name]["pid"] == first["pid"]  # the same process, never restarted
        assert sv.rpc().stopProcess(f"swarm-worker:{name}", True)
        assert sv.workers()[name]["exitstatus"] == 0
    finally:
        proxy.close()


def _declared(vhost: str, queue: str) -> bool:
    try:
        ready(vhost, queue)
        return True
    except Exception:  # noqa: BLE001 - pika says "not found" by closing the channel
        return False


@pytest.fixture
def bare_site(tmp_path, amqp_vhost, mysql_db, hbase_server):
    """A site with a ledger and no data: enough for workers to start."""
    made = Site(tmp_path, amqp_vhost, mysql_db, hbase_server, options={})
    made.init_ledger()
    yield made
    made.stop()


def test_supervisord_runs_as_the_service_user_logs_privately_and_says_nothing_critical(bare_site):
    sv = Supervisord(bare_site, 1)
    sv.start()
    try:
        [name] = sv.workers()
        log = sv.logs / f"{name}.log"
        wait_until(lambda: sv.running() == [name] and log.exists() and "serving" in log.read_text(),
                   "the worker to serve", timeout=60, every=0.1)
        assert sv.rpc().stopProcess(f"swarm-worker:{name}", True)
    finally:
        sv.stop()
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    supervisord_log = (sv.logs / "supervisord.log").read_text()
    assert stat.S_IMODE((sv.logs / "supervisord.log").stat().st_mode) == 0o640
    assert f"Set uid to user {os.getuid()} succeeded" in supervisord_log
    assert not [line for line in supervisord_log.splitlines() if " CRIT " in line], supervisord_log
