"""Bounded stages on the real services: the bound holds, a full successor slows its producer, nothing is lost.

The job is ``tests.support.pacedjob``: ``produce`` feeds ``consume``, whose
queue is bounded (``BOUND``); master and workers are processes, the ledger
MariaDB, the tables embedded (HBase plays no part here).
"""
from __future__ import annotations

import contextlib
import threading

import pika
import pika.exceptions
import pytest

from swarm.broker import stage_queue
from swarm.ledger import MessageState
from tests.support.pacedjob import BOUND
from tests.support.rabbitmq import DepthSampler, OwnNode
from tests.support.site import Site
from tests.support.tls import running
from tests.support.waiting import wait_until

JOB, DATE = "paced", "2026-11-22"
RUN = f"{JOB}@date={DATE}"
PRODUCE, CONSUME = stage_queue(JOB, "produce"), stage_queue(JOB, "consume")
WINDOW = 60  # the master keeps at most this many ready on produce's queue


@pytest.fixture
def site(tmp_path, amqp_vhost, mysql_db):
    site = Site(tmp_path, amqp_vhost, mysql_db, tables=f"embedded:///{tmp_path / 'tables.db'}")
    site.init_ledger()
    yield site
    site.stop_all()


def config(site: Site, chunks: int, **options):
    return site.config_file("paced", {
        "jobs": {"modules": ["tests.support.pacedjob"]},
        "worker": {"lease": 10.0},
        "master": {"poll": 0.2, "window": WINDOW},
        f"options.{JOB}": {"chunks": chunks, **options},
    })


def worker(site: Site, cfg, stage: str):
    return site.swarm(cfg, "worker", "--job", JOB, "--stages", stage)


def finish(site: Site, master, chunks: int) -> None:
    """The run is done with every message done exactly once and nothing failed."""
    try:
        code = master.wait(timeout=300)
    except Exception:
        master.kill()
        raise AssertionError(f"the master did not finish\n{site.log_tail()}") from None
    assert code == 0, site.log_tail()
    ledger = site.ledger()
    try:
        assert ledger.get_run(RUN).status == "done"
        assert ledger.counts(RUN) == {MessageState.DONE: 2 * chunks}  # each message once: a row per id
        assert ledger.counters(RUN) == {"produced": chunks, "consumed": chunks}  # counted once each
        assert ledger.failures(RUN) == []  # no fault, no retry spent, nothing dead
    finally:
        ledger.close()


def declared(site: Site) -> None:
    """Wait for the master to declare the job's queues."""

    def there() -> bool:
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(site.amqp))) as conn:
            try:
                conn.channel().queue_declare(CONSUME, passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return False
        return True

    wait_until(there, "the master to declare the queues", timeout=60, every=0.2)


def logged(site: Site, text: str) -> bool:
    return any(text in path.read_text(errors="replace") for path in site.logs.iterdir())


def test_a_bounded_stage_holds_its_bound_through_a_run_and_every_message_is_done_once(site):
    chunks = 400
    cfg = config(site, chunks, produce_sleep=0.001, consume_sleep=0.01)
    master = site.swarm(cfg, "master", JOB, "--date", DATE)
    declared(site)
    with DepthSampler(site.amqp, [PRODUCE, CONSUME], every=0.01) as depths:
        worker(site, cfg, "produce")
        worker(site, cfg, "consume")
        finish(site, master, chunks)
    assert depths.samples > 10
    assert depths.most[CONSUME] <= BOUND, depths.most  # one process publishes to it: exactly within
    assert depths.most[PRODUCE] <= WINDOW, depths.most  # the master published a window at a time
    assert depths.most[CONSUME] >= BOUND // 2  # it did fill: consume is the slower stage
    assert logged(site, f"queue {CONSUME} is full")


def test_a_full_successor_slows_its_producer_which_goes_on_once_there_is_room(site):
    chunks = 300
    cfg = config(site, chunks)
    ledger = site.ledger()
    try:
        master = site.swarm(cfg, "master", JOB, "--date", DATE)
        declared(site)
        with DepthSampler(site.amqp, [CONSUME], every=0.01) as depths:
            worker(site, cfg, "produce")  # nothing consumes yet
            wait_until(lambda: logged(site, "stage produce: a queue it sends to stays full"),
                       "the producer held back", timeout=120, every=0.2)
            # The producer waits: consume's queue stays at its bound, and the children it could not publish
            # wait in the ledger, queued, their parents done.
            wait_until(lambda: depths.most[CONSUME] == BOUND, "consume's queue full", timeout=60, every=0.1)
            counts = ledger.counts(RUN)
            assert counts.get(MessageState.DONE, 0) < chunks  # not every producer message could go through
            assert not counts.get(MessageState.DEAD) and not counts.get(MessageState.ABORTED)
            assert master.poll() is None  # the master waits too, it does not fail
            worker(site, cfg, "consume")
            finish(site, master, chunks)
        assert depths.most[CONSUME] <= BOUND
    finally:
        ledger.close()
    wait_until(lambda: logged(site, "stage produce: the queues it sends to have room again"),
               "the producer's cap lifted once consume's queue cooled down", timeout=60, every=0.2)


@pytest.fixture
def own_node(tmp_path_factory):
    with running(OwnNode(tmp_path_factory.mktemp("own-rabbit"))) as node:
        yield node


def test_a_resource_alarm_mid_run_holds_the_publishers_while_consumers_go_on_and_nothing_is_lost(
        tmp_path, own_node, mysql_db):
    site = Site(tmp_path, "/", mysql_db, broker=own_node.url(heartbeat=5), tables=f"embedded:///{tmp_path}/t.db")
    site.init_ledger()
    chunks = 300
    cfg = config(site, chunks, consume_sleep=0.005)
    ledger = site.ledger()

    def done() -> int:
        return ledger.counts(RUN).get(MessageState.DONE, 0)

    try:
        master = site.swarm(cfg, "master", JOB, "--date", DATE)
        worker(site, cfg, "produce")
        declared(site)
        with DepthSampler(site.amqp, [CONSUME], every=0.01) as depths:
            wait_until(lambda: depths.most[CONSUME] == BOUND, "consume's queue full", timeout=120, every=0.1)
        with own_node.alarm():
            # The producer's and the master's next publishes block their connections, and wait.
            wait_until(lambda: logged(site, "blocks publishing"), "a publisher blocked", timeout=60, every=0.1)
            before = done()
            worker(site, cfg, "consume")  # starts, consumes and acks during the alarm: it publishes nothing
            wait_until(lambda: done() >= before + BOUND // 2, "consume acking during the alarm", timeout=120,
                       every=0.1)
        finish(site, master, chunks)  # the publishers go on: every message done once
        assert logged(site, "unblocked publishing")
    finally:
        ledger.close()
        site.stop_all()
