"""Crash safety on the real services: lost work is found and redone, bad input is dead-lettered,
and only one master runs a job and date at a time."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import msgpack
import pika
import pytest

from swarm.broker import stage_queue
from swarm.envelope import Envelope, encode
from swarm.ledger import MessageState
from tests.integration.test_pipeline import EVENTS, finish, run_id
from tests.support import ROOT
from tests.support.rabbitmq import amqp_url
from tests.support.site import DATE, JOB
from tests.support.waiting import wait_until


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 16, "sleep": 0.3}, lease=2.0, lost_after=3.0)


def counts(site):
    return site.ledger().counts(run_id())


def test_a_purged_queue_is_republished_by_the_master(site):
    master = site.start_master()
    wait_until(lambda: counts(site).get("queued", 0) >= 16, "the plan on the queue", timeout=120, every=0.1)
    channel = pika.BlockingConnection(pika.URLParameters(amqp_url(site.vhost))).channel()
    purged = channel.queue_purge(stage_queue(JOB, "scan")).method.message_count
    assert purged == 16  # every chunk's message is gone from the broker
    site.start_worker()
    site.start_worker()
    finish(site, master)


def test_a_hung_worker_loses_its_lease_and_cannot_commit_later(site):
    hung = site.start_worker()
    master = site.start_master()
    wait_until(lambda: counts(site).get(MessageState.CLAIMED, 0) > 0, "a message in hand", timeout=120, every=0.1)
    hung.send_signal(signal.SIGSTOP)  # hangs mid-message, lease not renewed
    try:
        site.start_worker()
        finish(site, master)
    finally:
        hung.send_signal(signal.SIGCONT)
    fenced = [f for f in site.ledger().failures(run_id()) if f.error == "lease expired"]
    assert fenced, "the master took over at least one expired lease"
    # The woken worker's late result is refused by the fence: nothing counted twice.
    time.sleep(1.0)
    assert site.ledger().counters(run_id()) == {"rows": EVENTS, "merchants": 40}


def bad_inputs(keys) -> dict[str, tuple[bytes, str]]:
    """Bodies a worker must dead-letter, each with what its reason says; signed where signing is not the point."""
    return {
        "undecodable": (b"\xc1\x00not msgpack", "not valid msgpack"),
        "wrong version": (msgpack.packb({"v": 7, "job": JOB}), "schema version 7"),
        "unknown stage": (encode(Envelope(JOB, f"{JOB}@date={DATE}", "map", "ghost", "x1"), keys),
                          "unknown stage 'ghost'"),
        "unknown job": (encode(Envelope("nojob", "nojob@date=x", "map", "scan", "x1"), keys), "job 'nojob'"),
        "oversize": (b"\x00" * (1024 * 1024 + 1), "over the 1048576-byte limit"),
        "invalid payload": (encode(Envelope(JOB, f"{JOB}@date={DATE}", "map", "scan", "x2", payload={"start": 1}),
                                   keys), "fails stage 'scan' validation"),
    }


def test_bad_input_is_dead_lettered_with_its_reason_and_the_worker_serves_on(site):
    worker = site.start_worker()
    wait_until(lambda: _has_consumer(site.vhost, stage_queue(JOB, "scan")),
               "the worker consuming", timeout=120, every=0.1)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(site.vhost)))
    channel = conn.channel()
    channel.confirm_delivery()
    bad = bad_inputs(site.keys())
    for body, _ in bad.values():
        channel.basic_publish("", stage_queue(JOB, "scan"), body, pika.BasicProperties(delivery_mode=2))
    conn.close()
    master = site.start_master()  # real work after the bad input, through the same worker
    finish(site, master)
    assert worker.poll() is None, "the worker is still serving"
    listed = _dlq_list(site)
    for name, (_, reason) in bad.items():
        assert any(reason in d["reason"] for d in listed), f"{name}: no dead letter with {reason!r} in {listed}"
    assert len(listed) == len(bad)


def _has_consumer(vhost: str, queue: str) -> bool:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.consumer_count > 0
    except pika.exceptions.ChannelClosedByBroker:
        return False  # not declared yet
    finally:
        if conn.is_open:
            conn.close()


def _dlq_list(site) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "swarm.cli", "--config", str(site.config), "dlq", "list", "--job", JOB, "--json"],
        cwd=site.tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_second_master_for_the_same_date_refuses_naming_the_first(site):
    first = site.start_master()
    wait_until(lambda: counts(site).get("queued", 0) > 0, "the first master running", timeout=120, every=0.1)
    second = site.start_master()
    assert second.wait(timeout=120) == 3
    log = sorted(site.logs.iterdir())[-1].read_text()
    assert f"another master already runs {run_id()}" in log and f":{first.pid}:" in log
    first.send_signal(signal.SIGKILL)
    first.wait()
    # The lock died with the first master's session: a new master takes over and finishes.
    site.start_worker()
    finish(site, site.start_master())
    assert counts(site) == {MessageState.DONE: sum(counts(site).values())}
