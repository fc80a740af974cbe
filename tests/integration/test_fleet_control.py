"""Fleet control on RabbitMQ + MariaDB + HBase with worker processes: pause, resume, drain, a restart while paused."""
from __future__ import annotations

import json

import pika
import pytest

from swarm.broker import stage_queue
from swarm.ledger import MessageState
from tests.integration.test_pipeline import EVENTS, claimed, finish, run_id
from tests.support.rabbitmq import amqp_url
from tests.support.site import JOB, Site
from tests.support.waiting import wait_until

SCAN = stage_queue(JOB, "scan")


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 64, "sleep": 0.5})  # a map phase of several seconds


def consumers(site: Site, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(site.vhost)))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:
        return 0  # not declared yet
    finally:
        if conn.is_open:
            conn.close()


def counts(site: Site) -> dict:
    return site.ledger().counts(run_id())


def ctl(site: Site, *args: str) -> str:
    done = site.cli("ctl", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_paused_stage_stops_on_every_worker_stays_paused_across_a_restart_and_resumes(site):
    workers = [site.start_worker(), site.start_worker()]
    master = site.start_master()
    wait_until(lambda: consumers(site, SCAN) == 2, "both workers consuming", timeout=120, every=0.2)
    wait_until(lambda: counts(site).get(MessageState.DONE, 0) >= 2, "some scans done", timeout=120, every=0.1)

    ctl(site, "pause", JOB, "scan", "--reason", "region server maintenance")
    # Within a bounded wait: no worker consumes the stage, and the work in hand has finished (acked done).
    wait_until(lambda: consumers(site, SCAN) == 0 and claimed(site) == 0, "the pause on every worker",
               timeout=15, every=0.1)
    paused_at = counts(site)
    assert paused_at.get(MessageState.QUEUED, 0) > 0, paused_at  # the rest waits on the broker
    status = site.cli("status", run_id())
    assert "paused: scan" in status.stdout, status.stdout

    # A worker restarted while the stage is paused comes back paused.
    site.stop([workers[0]])
    workers[0] = site.start_worker()
    wait_until(lambda: "stage scan starts paused" in site.log_tail(workers[0], 200), "the restarted worker up",
               timeout=60, every=0.2)
    assert consumers(site, SCAN) == 0 and claimed(site) == 0
    assert counts(site).get(MessageState.DONE, 0) == paused_at.get(MessageState.DONE, 0)
    status = json.loads(ctl(site, "status", JOB, "--json"))
    assert status["jobs"][0]["paused"]["scan"]["reason"] == "region server maintenance"

    assert "pause of stage scan lifted" in ctl(site, "resume", JOB, "scan")
    finish(site, master)  # every message done once, the summary exact


def test_a_drain_holds_the_next_phase_until_resumed_and_the_run_then_finishes(site):
    site.start_worker()
    site.start_worker()
    master = site.start_master()
    wait_until(lambda: counts(site).get(MessageState.DONE, 0) >= 2, "some scans done", timeout=120, every=0.1)

    assert "draining" in ctl(site, "drain", JOB, "--reason", "deploy")

    def drained() -> bool:
        return json.loads(ctl(site, "status", JOB, "--json"))["jobs"][0]["drain"]["drained"]

    wait_until(drained, "the job drained", timeout=120, every=0.5)
    ledger = site.ledger()
    assert ledger.phase_state(run_id(), "reduce") is None  # the next phase is not planned
    assert set(counts(site)) == {MessageState.DONE}  # every queued scan finished; nothing else published
    assert master.poll() is None  # the master waits, watching its run
    assert "drained" in site.cli("status", run_id()).stdout

    assert "drain lifted" in ctl(site, "resume", JOB)
    finish(site, master)
