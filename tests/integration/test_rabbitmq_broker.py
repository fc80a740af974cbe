"""The RabbitMQ brokers against a real RabbitMQ, each test in a vhost of its own.

The broker contract runs here on ``RabbitBroker``; below it, what only
RabbitMQ does (delay queues, delivery limits, reconnects, coalesced acks)
and the blocking broker the master publishes with.
"""
from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time

import pika.channel
import pytest

from swarm.backends import open_broker
from swarm.broker import dead_letter_queue
from swarm.brokers.rabbitmq import DELAY_TIERS_MS, BlockingRabbitBroker, RabbitBroker, delay_tier, retry_queue
from swarm.errors import BackendError
from tests.support.contracts.broker import NEXT, BrokerContract, Q, Recorder, serving, taken
from tests.support.rabbitmq import FaultProxy, OwnNode, amqp_url, queue_types, rabbitmqctl, ready, temporary_vhost
from tests.support.tls import running
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def vhost():
    with temporary_vhost() as name:
        yield name


class TestRabbitBroker(BrokerContract):
    PUTS_BACK_IN_PLACE = False  # a quorum queue may requeue at its back

    @pytest.fixture
    def connect(self, vhost):
        return lambda: RabbitBroker(amqp_url(vhost))


@pytest.fixture
def broker(vhost):
    b = RabbitBroker(amqp_url(vhost))
    b.declare([Q, NEXT])
    yield b
    b.close()


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pool") as p:
        yield p


# -- publish and consume ---------------------------------------------------


def test_unroutable_publish_raises_rather_than_vanishing(broker, vhost):
    broker.publish([(Q, b"first")])  # the broker now knows Q exists
    rabbitmqctl("delete_queue", "-p", vhost, Q)
    with pytest.raises(BackendError, match="no queue named swarm.test.stage"):
        broker.publish([(Q, b"second")])
    broker.publish([(NEXT, b"still works")])
    assert broker.depth(NEXT) == 1


# -- delays, dead letters, delivery limit ----------------------------------


def test_declare_creates_quorum_stage_dead_letter_and_delay_queues(broker, vhost):
    types = queue_types(vhost)
    expected = {Q, dead_letter_queue(Q)} | {retry_queue(Q, ms) for ms in DELAY_TIERS_MS}
    assert {name: types.get(name) for name in expected} == dict.fromkeys(expected, "quorum")


def test_delayed_message_waits_in_its_delay_queue_then_arrives(broker, vhost):
    rec = Recorder(settle=lambda d: d.ack())
    broker.consume(Q, 10, rec)
    with serving(broker):
        broker.publish([(Q, b"later")], delay=4.0)
        broker.publish([(Q, b"now")])
        wait_until(lambda: rec.bodies == [b"now"], "the immediate message")
        # The delayed one waits ready in its delay queue, which nobody consumes: no worker holds it.
        assert ready(vhost, retry_queue(Q, 4000)) == 1
        assert ready(vhost, Q) == 0
        assert broker.depth(Q) == 1
        wait_until(lambda: rec.bodies == [b"now", b"later"], "the delayed message", timeout=60)
    death = rec.deliveries[1].headers["x-death"][0]
    assert (death["queue"], death["reason"]) == (retry_queue(Q, 4000), "expired")


def test_quorum_delivery_limit_sends_a_poison_message_to_the_dlq(vhost):
    broker = RabbitBroker(amqp_url(vhost, delivery_limit=2))
    try:
        broker.declare([Q])
        broker.publish([(Q, b"poison")])
        rec = Recorder(settle=lambda d: d.requeue())
        broker.consume(Q, 1, rec)
        dead = []
        with serving(broker):  # take_dead from this thread goes through the serving loop
            wait_until(lambda: broker.take_dead(Q, dead.append) or dead, "the message in the dlq")
        assert [(d.queue, d.body, d.reason) for d in dead] == [(Q, b"poison", "delivery limit exceeded")]
        assert [d.redelivered for d in rec.deliveries] == [False, True, True]
        assert ready(vhost, Q) == 0
    finally:
        broker.close()


# -- prefetch, cancel, close ---------------------------------------------


def test_a_changed_prefetch_applies_to_the_live_consumer_and_held_deliveries_stay_ackable(broker, vhost):
    broker.publish([(Q, b"%d" % i) for i in range(12)])
    rec = Recorder()  # holds everything unacked
    broker.consume(Q, 4, rec)
    with serving(broker):
        wait_until(lambda: len(rec) == 4, "four deliveries")
        broker.set_prefetch(Q, 1)
        time.sleep(0.3)  # the consumer starts again with prefetch 1 beside the four still held
        first = rec.deliveries[:4]
        for d in first:
            d.ack()  # taken before the change: still ackable on the same channel
        wait_until(lambda: ready(vhost, Q) <= 7, "the consumer to go on")
        time.sleep(0.5)  # a consumer still at prefetch 4 would take three more now
        held = [d for d in rec.deliveries if d not in first]
        assert len(held) == 1 and ready(vhost, Q) == 7
        broker.set_prefetch(Q, 3)
        # RabbitMQ counts prefetch per consumer: the new one takes three, beside the one still held.
        wait_until(lambda: len(rec) == 8, "three more once the prefetch is raised")
        time.sleep(0.3)
        assert len(rec) == 8 and ready(vhost, Q) == 4
        for d in rec.deliveries[4:]:
            d.ack()
        wait_until(lambda: len(rec) == 11, "three more after the acks")
        rec._settle = lambda d: d.ack()
        for d in rec.deliveries[8:]:
            d.ack()
        wait_until(lambda: len(set(rec.bodies)) == 12, "every message")
    assert sorted(set(rec.bodies)) == sorted(b"%d" % i for i in range(12))
    assert ready(vhost, Q) == 0 and broker.depth(Q) == 0


# -- liveness and failures -------------------------------------------------


def test_a_handler_busy_longer_than_the_heartbeat_does_not_lose_the_connection(vhost, caplog):
    broker = RabbitBroker(amqp_url(vhost, heartbeat=2))
    broker.declare([Q])

    def slow(delivery):  # a pool thread busy for three heartbeat intervals
        threading.Thread(target=lambda: (time.sleep(6), delivery.ack())).start()

    rec = Recorder(settle=slow)
    broker.consume(Q, 1, rec)
    try:
        with caplog.at_level(logging.WARNING, logger="swarm.brokers.rabbitmq"), serving(broker):
            broker.publish([(Q, b"slow")])
            wait_until(lambda: len(rec) == 1, "the slow message")
            broker.publish([(Q, b"next")])  # delivered only once the slow one is acked (prefetch 1)
            wait_until(lambda: len(rec) == 2, "the next message", timeout=60)
    finally:
        broker.close()
    assert rec.bodies == [b"slow", b"next"]
    assert not any(d.redelivered for d in rec.deliveries)  # a lost connection would have redelivered
    assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]


@pytest.mark.exclusive
def test_serve_survives_a_broker_restart_without_losing_messages(broker, vhost, pool):
    held: list = []

    def settle(delivery):
        if delivery.body == b"held" and not delivery.redelivered:
            held.append(delivery)  # unacked when the broker goes down
        else:
            pool.submit(delivery.ack)

    rec = Recorder(settle=settle)
    broker.consume(Q, 4, rec)
    before = [b"before-%d" % i for i in range(5)]
    after = [b"after-%d" % i for i in range(5)]
    with serving(broker):
        broker.publish([(Q, b"held")] + [(Q, body) for body in before])
        wait_until(lambda: len(rec) == 6, "every message delivered")
        try:
            rabbitmqctl("stop_app")
        finally:
            rabbitmqctl("start_app")
        held[0].ack()  # from the lost connection: a harmless no-op
        publish_when_back(broker, [(Q, body) for body in after])
        wait_until(lambda: set(after) <= set(rec.bodies) and len(held_again(rec)) == 1,
                   "the new messages and the held one, again", timeout=60)
    assert set(rec.bodies) == set(before + after + [b"held"])  # none lost (an ack lost in the restart may duplicate)
    assert ready(vhost, Q) == 0


def held_again(rec):
    return [d for d in rec.deliveries if d.body == b"held" and d.redelivered]


def publish_when_back(broker, messages, timeout=60.0):
    """Publish, retrying while the broker is still coming back (as a worker would)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return broker.publish(messages)
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_serve_reconnects_after_the_network_drops(vhost):
    proxy = FaultProxy()
    broker = RabbitBroker(amqp_url(vhost, port=proxy.port))
    try:
        broker.declare([Q])
        rec = Recorder()
        broker.consume(Q, 1, rec)
        with serving(broker):
            broker.publish([(Q, b"one")])
            wait_until(lambda: len(rec) == 1, "the first delivery")
            # the connection made before serve is handed over or shut; a shut one leaves the proxy a moment later
            wait_until(lambda: proxy.connections() == 2, "the consumers' connection and the publishing one alone")
            assert proxy.cut() == 2
            wait_until(lambda: len(rec) == 2, "the redelivery on a new connection")
            rec.deliveries[0].ack()  # the old connection's tag: ignored
            rec.deliveries[1].ack()
            broker.publish([(Q, b"two")])  # prefetch 1: arrives only once the new tag's ack took effect
            wait_until(lambda: len(rec) == 3, "a message on the new connection")
        assert rec.bodies == [b"one", b"one", b"two"]
        assert [d.redelivered for d in rec.deliveries] == [False, True, False]
    finally:
        broker.close()
        proxy.close()


@pytest.mark.parametrize("kind", [BlockingRabbitBroker, RabbitBroker])
def test_an_idle_connection_that_died_is_replaced_on_the_next_call(vhost, kind):
    proxy = FaultProxy()
    broker = kind(amqp_url(vhost, port=proxy.port))
    try:
        broker.declare([Q])  # nothing serves: the calling thread pumps the connection, as the master's does
        broker.publish([(Q, b"before the cut")])
        proxy.cut()
        broker.publish([(Q, b"after the cut")])
        assert broker.depth(Q) == 2
        assert proxy.connections() == (2 if kind is RabbitBroker else 1)  # a serving broker publishes apart
    finally:
        broker.close()
        proxy.close()


def test_serve_waits_for_an_unreachable_broker_then_consumes(vhost):
    proxy = FaultProxy()
    broker = RabbitBroker(amqp_url(vhost, port=proxy.port))
    direct = RabbitBroker(amqp_url(vhost))
    try:
        broker.declare([Q])
        rec = Recorder(settle=lambda d: d.ack())
        broker.consume(Q, 2, rec)
        proxy.refusing = True
        proxy.cut()
        with serving(broker):
            direct.publish([(Q, b"while down")])
            time.sleep(1)  # serve keeps retrying meanwhile
            assert len(rec) == 0
            proxy.refusing = False
            wait_until(lambda: rec.bodies == [b"while down"], "the message once reachable")
    finally:
        broker.close()
        direct.close()
        proxy.close()


def test_a_failing_callback_requeues_and_serving_goes_on(broker, vhost):
    calls = []

    def flaky(delivery):
        calls.append(delivery.redelivered)
        if len(calls) == 1:
            raise RuntimeError("handler bug")
        delivery.ack()

    broker.consume(Q, 1, flaky)
    with serving(broker):
        broker.publish([(Q, b"x")])
        wait_until(lambda: len(calls) == 2, "the redelivery")
    assert calls == [False, True]


# -- declaration, configuration, errors ------------------------------------


def test_declare_is_idempotent_and_a_conflict_says_what_is_wrong(broker, vhost):
    broker.declare([Q, NEXT])
    other = RabbitBroker(amqp_url(vhost))
    try:
        other.declare([Q])
    finally:
        other.close()
    changed = RabbitBroker(amqp_url(vhost, delivery_limit=7))
    try:
        with pytest.raises(BackendError, match="(?s)inequivalent arg 'x-delivery-limit'.*other arguments"):
            changed.declare([Q])
    finally:
        changed.close()


@pytest.mark.parametrize("serve", [True, False])
def test_connection_errors_are_backend_errors_without_the_password(vhost, caplog, serve):
    secret = "Not-The-Pa55word"
    caplog.set_level(logging.DEBUG)
    cases = [(amqp_url(vhost, password=secret), "login refused"),
             (amqp_url(vhost, port=1, password=secret), "Connection refused")]
    for url, why in cases:
        broker = open_broker(url, serve=serve)
        with pytest.raises(BackendError, match=why) as error:
            broker.depth(Q)
        assert secret not in str(error.value)
        assert "guest:***@127.0.0.1" in str(error.value)
    assert secret not in caplog.text


# -- settling in bulk ------------------------------------------------------


def test_acks_and_requeues_from_many_threads_in_random_order(broker, vhost, monkeypatch):
    written: list[tuple[int, bool]] = []
    real_ack = pika.channel.Channel.basic_ack

    def spy(ch, delivery_tag=0, multiple=False):
        written.append((delivery_tag, multiple))
        return real_ack(ch, delivery_tag, multiple)

    monkeypatch.setattr(pika.channel.Channel, "basic_ack", spy)
    bodies = [b"m%04d" % i for i in range(600)]
    requeued = set(random.Random(7).sample(bodies, 60))
    broker.publish([(Q, body) for body in bodies])

    def settle(delivery):
        time.sleep(random.uniform(0, 0.004))  # finish out of delivery order
        if delivery.body in requeued and not delivery.redelivered:
            delivery.requeue()
        else:
            delivery.ack()

    with concurrent.futures.ThreadPoolExecutor(12) as many:
        rec = Recorder(settle=lambda d: many.submit(settle, d))
        broker.consume(Q, 64, rec)
        with serving(broker):
            wait_until(lambda: len(rec) == len(bodies) + len(requeued), "every message and every requeued one again")
            time.sleep(0.5)  # a requeue wrongly covered by a multiple ack would show up as a late extra
            assert ready(vhost, Q) == 0
    firsts = [d.body for d in rec.deliveries if not d.redelivered]
    agains = [d.body for d in rec.deliveries if d.redelivered]
    assert sorted(firsts) == bodies  # each delivered once ...
    assert sorted(agains) == sorted(requeued)  # ... and only the requeued ones once more
    assert any(multiple for _, multiple in written), "no multiple ack was written"
    assert ready(vhost, Q) == 0


def test_settling_deliveries_of_a_lost_connection_does_nothing(vhost, caplog):
    proxy = FaultProxy()
    broker = RabbitBroker(amqp_url(vhost, port=proxy.port))
    try:
        broker.declare([Q])
        broker.publish([(Q, b"%d" % i) for i in range(8)])
        rec = Recorder()
        broker.consume(Q, 8, rec)
        with caplog.at_level(logging.WARNING, logger="swarm.brokers.rabbitmq"), serving(broker):
            wait_until(lambda: len(rec) == 8, "eight deliveries held")
            proxy.refusing = True
            proxy.cut()
            old = list(rec.deliveries)
            for i, d in enumerate(old):  # settled while no connection is up, then on the new one
                d.requeue() if i % 3 == 0 else d.ack()
            proxy.refusing = False
            wait_until(lambda: len(rec) == 16, "all eight again on a new connection")
            for d in old:
                d.ack()  # settled already: ignored
            new = rec.deliveries[8:]
            assert all(d.redelivered for d in new)
            for d in new:
                d.ack()
            broker.publish([(Q, b"last")])  # prefetch 8: arrives whatever was acked
            wait_until(lambda: len(rec) == 17, "a message on the new connection")
            rec.deliveries[16].ack()
            wait_until(lambda: ready(vhost, Q) == 0, "the queue drained")
            time.sleep(0.3)
            assert len(rec) == 17  # no settle of an old tag closed the new channel (which redelivers)
        assert sorted(d.body for d in rec.deliveries[8:16]) == sorted(d.body for d in old)
        closed = [r for r in caplog.records if "closed the channel" in r.getMessage()]
        assert not closed
        assert proxy.connections() == 2  # the consumers' connection and the publishing one
    finally:
        broker.close()
        proxy.close()


def test_prefetch_bounds_deliveries_while_pool_threads_ack_in_bulk(broker, pool):
    broker.publish([(Q, b"%d" % i) for i in range(200)])
    lock = threading.Lock()
    held = [0]
    most = [0]

    def ack(delivery):
        time.sleep(random.uniform(0, 0.002))
        with lock:
            held[0] -= 1  # before the ack goes out: the broker cannot have sent more yet
        delivery.ack()

    def take(delivery):
        with lock:
            held[0] += 1
            most[0] = max(most[0], held[0])
        pool.submit(ack, delivery)

    rec = Recorder(settle=take)
    broker.consume(Q, 5, rec)
    with serving(broker):
        wait_until(lambda: len(rec) == 200, "every message")
    assert most[0] <= 5
    assert not any(d.redelivered for d in rec.deliveries)


# -- the blocking broker (the master's) --------------------------------------


@pytest.fixture
def publisher(vhost):
    b = open_broker(amqp_url(vhost), serve=False)
    assert isinstance(b, BlockingRabbitBroker)
    yield b
    b.close()


def test_what_the_blocking_broker_publishes_a_serving_one_consumes(publisher, broker):
    bodies = [b"%05d" % i for i in range(12000)]
    publisher.declare([Q])
    publisher.publish([(Q, body) for body in bodies])  # returns once the broker has confirmed all of them
    publisher.publish([(Q, b"later")], delay=60)
    assert (publisher.depth(Q), publisher.depth(Q, delayed=False)) == (12001, 12000)
    rec = Recorder(settle=lambda d: d.ack())
    broker.consume(Q, 256, rec)
    with serving(broker):
        wait_until(lambda: len(rec) == len(bodies), "every message")
    assert rec.bodies == bodies
    assert (publisher.depth(Q), publisher.purge(retry_queue(Q, delay_tier(60)))) == (1, 1)
    assert publisher.ping().startswith("RabbitMQ ")


def test_the_blocking_broker_refuses_an_unknown_queue_and_moves_dead_letters(publisher, vhost):
    publisher.declare([Q])
    with pytest.raises(BackendError, match="swarm.test.missing"):
        publisher.publish([(Q, b"fine"), ("swarm.test.missing", b"lost?")])
    assert publisher.depth(Q) == 0
    for body in (b"first", b"second"):
        publisher.dead_letter(Q, body, "why")

    def store_fails(dead):
        raise OSError("ledger down")

    with pytest.raises(OSError):
        publisher.take_dead(Q, store_fails)
    assert ready(vhost, dead_letter_queue(Q)) == 2
    assert sorted((d.body, d.reason) for d in taken(publisher)) == [(b"first", "why"), (b"second", "why")]
    assert ready(vhost, dead_letter_queue(Q)) == 0


def test_the_blocking_broker_takes_calls_from_many_threads(publisher):
    publisher.declare([Q])

    def publish_and_look(t):  # as the master's thread and its metrics server's do
        for i in range(10):
            publisher.publish([(Q, b"t%d-%d" % (t, i))] * 50)
            publisher.depth(Q)

    with concurrent.futures.ThreadPoolExecutor(4) as threads:
        list(threads.map(publish_and_look, range(4)))
    assert publisher.depth(Q) == 4 * 10 * 50


# -- resource alarms (on a node of the tests' own: an alarm blocks every publisher of its node) -----------


@pytest.fixture(scope="module")
def own_node(tmp_path_factory):
    with running(OwnNode(tmp_path_factory.mktemp("own-rabbit"))) as node:
        yield node


def in_thread(fn):
    """Run ``fn`` on a thread; ``.outcome`` gets its result or the exception it raised."""
    def run():
        try:
            thread.outcome = fn()
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            thread.outcome = e

    thread = threading.Thread(target=run, daemon=True)
    thread.outcome = None
    thread.start()
    return thread


def test_publishers_wait_out_a_resource_alarm_while_consumers_keep_acking(own_node, caplog):
    caplog.set_level(logging.WARNING, logger="swarm.brokers.rabbitmq")
    broker = RabbitBroker(own_node.url())
    try:
        broker.declare([Q, NEXT])
        broker.publish([(Q, b"%02d" % i) for i in range(20)])
        acked = Recorder(settle=lambda d: d.ack())
        with serving(broker):
            with own_node.alarm():
                publisher = in_thread(lambda: broker.publish([(NEXT, b"during the alarm")]))
                wait_until(lambda: "blocks publishing" in caplog.text, "the publishing connection blocked")
                # Prefetch 1: every delivery after the first comes only once the broker has read the ack before it.
                broker.consume(Q, 1, acked)
                wait_until(lambda: len(acked) == 20, "every message delivered and acked during the alarm")
                assert publisher.is_alive()  # the publisher waits for the alarm to clear
            publisher.join(60)
            assert not publisher.is_alive() and publisher.outcome is None  # then its publish is confirmed
            assert broker.depth(NEXT) == 1 and broker.depth(Q) == 0
        assert sorted(acked.bodies) == [b"%02d" % i for i in range(20)]
        assert not any(d.redelivered for d in acked.deliveries)  # the consumers' connection was never lost
        assert "unblocked publishing" in caplog.text
    finally:
        broker.close()


def test_a_publish_blocked_past_its_bound_fails_and_one_parked_meanwhile_is_never_written(own_node, caplog):
    caplog.set_level(logging.WARNING, logger="swarm.brokers.rabbitmq")
    broker = RabbitBroker(own_node.url(blocked_connection_timeout=3))
    try:
        broker.declare([Q])
        broker.purge(Q)
        with serving(broker):
            with own_node.alarm():
                first = in_thread(lambda: broker.publish([(Q, b"first")]))  # written: the broker blocks on it
                wait_until(lambda: "blocks publishing" in caplog.text, "the publishing connection blocked")
                parked = in_thread(lambda: broker.publish([(Q, b"parked")]))  # not written while blocked
                for publish in (first, parked):
                    publish.join(60)
                    assert isinstance(publish.outcome, BackendError), publish.outcome  # the outage path takes it
            publish_when_back(broker, [(Q, b"after")])  # a new publishing connection, once the alarm is over
            taken = Recorder(settle=lambda d: d.ack())
            broker.consume(Q, 10, taken)
            wait_until(lambda: b"after" in taken.bodies, "the publish after the alarm")
        assert b"parked" not in taken.bodies  # failed, and never sent: publishing it again duplicates nothing
    finally:
        broker.close()
