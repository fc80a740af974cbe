"""The behaviour every broker shares, run against each implementation.

A test module subclasses ``BrokerContract`` and provides a ``connect``
fixture: a function that opens a new serving broker connection on one empty
server (an in-process hub, a RabbitMQ vhost). ``broker`` is one connection
with the queues ``Q`` and ``NEXT`` declared; ``reopen()`` opens another on the
same server, as a second process would; both are closed after the test.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import threading
from typing import Callable, Iterator

import pytest

from swarm.broker import Broker, dead_letter_queue
from swarm.errors import BackendError, QueueFull
from swarm.limits import MAX_DEAD_LETTER_BYTES, MAX_REASON_CHARS
from tests.support.waiting import wait_until

Q = "swarm.test.stage"
NEXT = "swarm.test.next"
MISSING = "swarm.test.missing"
BOUNDED = "swarm.test.bounded"


class Recorder:
    """A consumer callback that keeps every delivery and optionally settles it."""

    def __init__(self, settle: Callable | None = None):
        self.deliveries: list = []
        self.threads: set[str] = set()
        self._settle = settle
        self._lock = threading.Lock()

    def __call__(self, delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            self.threads.add(threading.current_thread().name)
        if self._settle is not None:
            self._settle(delivery)

    @property
    def bodies(self) -> list[bytes]:
        with self._lock:
            return [d.body for d in self.deliveries]

    def __len__(self) -> int:
        with self._lock:
            return len(self.deliveries)


@contextlib.contextmanager
def serving(broker) -> Iterator[threading.Thread]:
    """Run ``broker.serve`` on its own thread for the block; stop it and check it returned."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            broker.serve(stop)
        except BaseException as e:  # reported in the test's thread below
            failure.append(e)

    thread = threading.Thread(target=run, name="serve", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "serve did not return after stop was set"
    assert not failure, f"serve raised {failure[0]!r}"


def taken(broker: Broker, limit: int = 1000) -> list:
    letters: list = []
    broker.take_dead(Q, letters.append, limit=limit)
    return letters


class BrokerContract:
    # A quorum queue may put a letter back behind the others; the in-process broker keeps its place.
    PUTS_BACK_IN_PLACE = True

    @pytest.fixture
    def reopen(self, connect: Callable[[], Broker]) -> Iterator[Callable[[], Broker]]:
        opened: list[Broker] = []

        def open_() -> Broker:
            opened.append(connect())
            return opened[-1]

        yield open_
        for broker in opened:
            broker.close()

    @pytest.fixture
    def broker(self, reopen) -> Broker:
        broker = reopen()
        broker.declare([Q, NEXT])
        return broker

    @pytest.fixture
    def pool(self) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
        with concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="pool") as pool:
            yield pool

    # declaring and publishing ---------------------------------------------------------

    def test_declare_is_idempotent_and_keeps_what_is_queued(self, broker, reopen):
        broker.publish([(Q, b"kept")])
        broker.dead_letter(Q, b"dead", "why")
        broker.declare([Q, NEXT])
        reopen().declare([Q])
        assert broker.depth(Q) == 1
        assert [d.body for d in taken(broker)] == [b"dead"]

    def test_published_messages_are_consumed_in_order_and_acked_from_pool_threads(self, broker, reopen, pool):
        bodies = [b"m%03d" % i for i in range(50)]
        broker.publish([(Q, body) for body in bodies])
        assert broker.depth(Q) == 50  # publish returned only once the broker had all of them

        rec = Recorder(settle=lambda d: pool.submit(d.ack))
        broker.consume(Q, 4, rec)
        with serving(broker):
            # with prefetch 4, the 5th and later deliveries prove the pool threads' acks took effect
            wait_until(lambda: len(rec) == 50, "every message")
        assert rec.bodies == bodies
        assert reopen().depth(Q, delayed=False) == 0
        assert rec.threads == {"serve"}  # callbacks run on the thread that serves
        assert not any(d.redelivered for d in rec.deliveries)

    def test_publish_from_many_threads_and_from_a_callback_while_serving(self, broker, reopen, pool):
        def forward(delivery):  # on the serving thread: publishes there, then acks
            broker.publish([(NEXT, b"next-" + delivery.body)])
            delivery.ack()

        done = Recorder(settle=lambda d: pool.submit(d.ack))
        broker.consume(Q, 8, forward)
        broker.consume(NEXT, 8, done)
        expected = {b"next-t%d-%d" % (t, i) for t in range(6) for i in range(40)}
        with serving(broker):
            def publisher(t):
                for i in range(0, 40, 4):
                    broker.publish([(Q, b"t%d-%d" % (t, i + k)) for k in range(4)])

            with concurrent.futures.ThreadPoolExecutor(6) as publishers:
                list(publishers.map(publisher, range(6)))
            wait_until(lambda: len(done) == len(expected), "every message through both stages")
        assert sorted(done.bodies) == sorted(expected)
        other = reopen()
        assert other.depth(Q, delayed=False) == other.depth(NEXT, delayed=False) == 0

    def test_a_large_batch_is_confirmed_in_full(self, broker):
        broker.publish([(Q, b"%d" % i) for i in range(12000)])
        assert broker.depth(Q) == 12000

    def test_a_queue_not_declared_is_refused_before_anything_is_sent(self, broker):
        with pytest.raises(BackendError, match=MISSING):
            broker.publish([(Q, b"fine"), (MISSING, b"lost?")])
        with pytest.raises(BackendError, match=MISSING):
            broker.dead_letter(MISSING, b"lost?", "why")
        with pytest.raises(BackendError, match=MISSING):
            broker.consume(MISSING, 1, Recorder())
        assert broker.depth(Q) == 0

    def test_a_delayed_message_is_not_delivered_at_once_but_later(self, broker):
        rec = Recorder(settle=lambda d: d.ack())
        broker.consume(Q, 10, rec)
        with serving(broker):
            broker.publish([(Q, b"later")], delay=2.0)
            broker.publish([(Q, b"now")])
            wait_until(lambda: len(rec) >= 1, "the immediate message")
            assert rec.bodies == [b"now"]  # the delayed one, published first, waits
            assert (broker.depth(Q), broker.depth(Q, delayed=False)) == (1, 0)
            wait_until(lambda: rec.bodies == [b"now", b"later"], "the delayed message", timeout=60)

    # bounded queues -------------------------------------------------------------------

    def test_a_bounded_queue_takes_what_fits_and_refuses_the_rest_by_name(self, broker, reopen):
        broker.declare([BOUNDED], {BOUNDED: 3})
        with pytest.raises(QueueFull) as full:
            broker.publish([(BOUNDED, b"%d" % i) for i in range(5)] + [(Q, b"elsewhere")])
        assert (full.value.queue, full.value.queues, full.value.refused) == (BOUNDED, (BOUNDED,), {3, 4})
        assert isinstance(full.value, BackendError) and f"{BOUNDED} (max_queue 3) is full" in str(full.value)
        other = reopen()
        assert other.depth(BOUNDED, delayed=False) == 3 and other.depth(Q) == 1  # the others are published
        with pytest.raises(QueueFull):
            broker.publish([(BOUNDED, b"more")])
        broker.publish([(BOUNDED, b"later")], delay=60)  # a delayed message waits outside the queue
        held = Recorder()  # holds its delivery unacked: only ready messages count
        broker.consume(BOUNDED, 1, held)
        with serving(broker):
            wait_until(lambda: len(held) == 1, "one delivery held")
            broker.publish([(BOUNDED, b"3")])
            with pytest.raises(QueueFull) as again:
                broker.publish([(BOUNDED, b"4"), (BOUNDED, b"5")])
            assert again.value.refused == {0, 1}
            assert other.depth(BOUNDED, delayed=False) == 3 and len(held) == 1

    def test_publishes_from_many_threads_keep_a_bound_exactly(self, broker, reopen):
        broker.declare([BOUNDED], {BOUNDED: 25})
        refused = []

        def publisher(t):
            try:
                broker.publish([(BOUNDED, b"t%d-%d" % (t, i)) for i in range(10)])
            except QueueFull as full:
                refused.append(len(full.refused))

        with concurrent.futures.ThreadPoolExecutor(6) as publishers:
            list(publishers.map(publisher, range(6)))
        assert sum(refused) == 6 * 10 - 25
        assert reopen().depth(BOUNDED, delayed=False) == 25

    def test_a_queue_declared_again_with_another_bound_is_refused(self, broker, reopen):
        broker.declare([BOUNDED], {BOUNDED: 3})
        reopen().declare([BOUNDED], {BOUNDED: 3})  # the same bound: fine
        for bounds in ({BOUNDED: 4}, None):
            with pytest.raises(BackendError, match="(?s)inequivalent arg 'x-max-length'.*other arguments"):
                reopen().declare([BOUNDED], bounds)
        with pytest.raises(BackendError, match="inequivalent arg 'x-max-length'"):
            reopen().declare([Q], {Q: 10})  # bounding a queue that exists unbounded

    # settling -------------------------------------------------------------------------

    def test_an_ack_removes_and_a_requeue_gives_back_marked_redelivered(self, broker, reopen):
        broker.publish([(Q, b"acked"), (Q, b"requeued")])

        def settle(delivery):
            if delivery.body == b"acked" or delivery.redelivered:
                delivery.ack()
                delivery.requeue()  # settled already: the first call counts
            else:
                delivery.requeue()
                delivery.ack()

        rec = Recorder(settle=settle)
        broker.consume(Q, 2, rec)
        with serving(broker):
            wait_until(lambda: len(rec) == 3, "the requeued message again")
        broker.close()
        assert [(d.body, d.redelivered) for d in rec.deliveries] == [
            (b"acked", False), (b"requeued", False), (b"requeued", True)]
        assert reopen().depth(Q) == 0  # nothing came back when the connection closed: all acked

    def test_prefetch_bounds_unacked_deliveries(self, broker, reopen):
        broker.publish([(Q, b"%d" % i) for i in range(5)])
        other = reopen()
        rec = Recorder()  # holds everything unacked
        broker.consume(Q, 3, rec)
        with serving(broker):
            wait_until(lambda: len(rec) == 3, "three deliveries")
            assert other.depth(Q, delayed=False) == 2  # the broker holds back the rest
            assert len(rec) == 3
            rec.deliveries[0].ack()  # from this (non-serving) thread
            wait_until(lambda: len(rec) == 4, "a fourth delivery once one is acked")
            assert other.depth(Q, delayed=False) == 1
            assert len(rec) == 4
            for d in rec.deliveries[1:]:
                d.ack()
            wait_until(lambda: len(rec) == 5, "the last delivery")
            rec.deliveries[4].ack()

    def test_a_changed_prefetch_applies_to_the_live_consumer(self, broker, reopen):
        broker.publish([(Q, b"%d" % i) for i in range(12)])
        other = reopen()
        rec = Recorder()  # holds everything unacked
        broker.consume(Q, 4, rec)
        with serving(broker):
            wait_until(lambda: len(rec) == 4, "four deliveries")
            broker.set_prefetch(Q, 1)
            broker.depth(Q)  # a call after it: on RabbitMQ it runs once the consumer has started again
            for d in rec.deliveries[:4]:
                d.ack()  # taken before the change: still ackable
            wait_until(lambda: len(rec) == 5, "one more")
            assert other.depth(Q, delayed=False) == 7  # one at a time now
            broker.set_prefetch(Q, 3)
            broker.depth(Q)
            rec.deliveries[4].ack()
            wait_until(lambda: len(rec) == 8, "three more once the prefetch is raised")
            assert other.depth(Q, delayed=False) == 4
            rec._settle = lambda d: d.ack()
            for d in rec.deliveries[5:]:
                d.ack()
            wait_until(lambda: len(rec) == 12, "every message")
        broker.set_prefetch("swarm.test.nowhere", 3)  # no consumer of that queue: nothing to change
        assert sorted(rec.bodies) == sorted(b"%d" % i for i in range(12))
        assert not any(d.redelivered for d in rec.deliveries)
        assert other.depth(Q) == 0

    def test_cancel_stops_new_deliveries_and_those_in_hand_stay_ackable(self, broker, reopen):
        rec = Recorder()  # holds its delivery
        broker.consume(Q, 2, rec)
        with serving(broker):
            broker.publish([(Q, b"before")])
            wait_until(lambda: rec.bodies == [b"before"], "the first message")
            broker.cancel()
            broker.publish([(Q, b"after-1"), (Q, b"after-2")])
            assert broker.depth(Q) == 2
            rec.deliveries[0].ack()
        broker.close()
        assert rec.bodies == [b"before"]
        assert reopen().depth(Q, delayed=False) == 2  # the one acked after cancel did not come back

    def test_cancelling_one_queue_stops_only_its_deliveries_and_it_can_consume_again(self, broker):
        held, other = Recorder(), Recorder(settle=lambda d: d.ack())
        broker.consume(Q, 2, held)
        broker.consume(NEXT, 2, other)
        with serving(broker):
            broker.publish([(Q, b"q-1")])
            wait_until(lambda: held.bodies == [b"q-1"], "the first message")
            broker.cancel(Q)
            broker.publish([(Q, b"q-2"), (NEXT, b"n-1")])
            wait_until(lambda: other.bodies == [b"n-1"], "the other queue still served")
            assert broker.depth(Q) == 1 and held.bodies == [b"q-1"]
            held.deliveries[0].ack()  # still ackable after the cancel
            again = Recorder(settle=lambda d: d.ack())
            broker.consume(Q, 2, again)  # resumed
            wait_until(lambda: again.bodies == [b"q-2"], "the queue consumed again")
        assert broker.depth(Q) == 0

    def test_close_returns_unacked_deliveries_for_redelivery(self, reopen):
        first = reopen()
        first.declare([Q])
        first.publish([(Q, b"a"), (Q, b"b"), (Q, b"c")])
        held = Recorder()
        first.consume(Q, 5, held)
        with serving(first):
            wait_until(lambda: len(held) == 3, "three deliveries held unacked")
        first.close()
        held.deliveries[0].ack()  # settling after close does nothing, and does not raise

        second = reopen()
        again = Recorder(settle=lambda d: d.ack())
        second.consume(Q, 5, again)
        with serving(second):
            wait_until(lambda: len(again) == 3, "the three, redelivered")
        assert again.bodies == [b"a", b"b", b"c"]
        assert all(d.redelivered for d in again.deliveries)

    # depth and purge ------------------------------------------------------------------

    def test_purge_drops_ready_messages_and_depth_counts_delayed_ones(self, broker):
        broker.publish([(Q, b"1"), (Q, b"2"), (Q, b"3")])
        broker.publish([(Q, b"4"), (Q, b"5")], delay=60)
        assert (broker.depth(Q), broker.depth(Q, delayed=False)) == (5, 3)
        assert broker.purge(Q) == 3
        assert (broker.depth(Q), broker.depth(Q, delayed=False)) == (2, 0)

    # dead letters ---------------------------------------------------------------------

    def test_dead_letter_then_take_dead_with_reasons(self, broker, reopen):
        broker.dead_letter(Q, b"\xc1bad", "does not decode: unknown type")
        broker.dead_letter(Q, b"big", "too large")
        broker.dead_letter(Q, b"old", "schema version 0")
        first = taken(broker, limit=2)
        assert [(d.queue, d.body, d.reason) for d in first] == [
            (Q, b"\xc1bad", "does not decode: unknown type"),
            (Q, b"big", "too large"),
        ]
        assert [d.reason for d in taken(broker)] == ["schema version 0"]
        assert taken(broker) == []
        assert broker.take_dead(Q, lambda dead: None) == 0
        broker.close()
        assert taken(reopen()) == []  # taken means acked: closing the connection returned nothing

    def test_a_dead_letter_is_taken_only_once_it_is_stored(self, broker, reopen):
        for body in (b"first", b"second", b"third"):
            broker.dead_letter(Q, body, "why")
        stored = []

        def store_then_fail(dead):
            if len(stored) == 1:
                raise OSError("ledger down")
            stored.append(dead.body)

        with pytest.raises(OSError):
            broker.take_dead(Q, store_then_fail)
        assert stored == [b"first"]
        assert reopen().depth(dead_letter_queue(Q), delayed=False) == 2  # the one that failed, and the one behind
        left = [d.body for d in taken(broker)]
        assert (left if self.PUTS_BACK_IN_PLACE else sorted(left)) == [b"second", b"third"]

    def test_a_huge_body_and_reason_are_dead_lettered_cut(self, broker):
        huge, reason = b"z" * (20 << 20), "x" * 900_000
        broker.dead_letter(Q, huge, reason)
        broker.dead_letter(Q, b"", "empty")
        broker.publish([(Q, b"still connected")])
        [big, empty] = taken(broker)
        assert (len(big.body), big.size) == (MAX_DEAD_LETTER_BYTES, 20 << 20)
        assert big.sha256 == hashlib.sha256(huge).hexdigest() and len(big.reason) <= MAX_REASON_CHARS
        assert (empty.body, empty.reason, empty.size, empty.sha256) == (b"", "empty", None, None)
        assert broker.depth(Q) == 1
