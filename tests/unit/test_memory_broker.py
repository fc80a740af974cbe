import threading
import time

import pytest

from swarm.brokers.memory import MemoryBroker


def collect(broker, queue, prefetch, count, ack=True):
    got, stop = [], threading.Event()

    def cb(d):
        got.append(d)
        if ack:
            d.ack()
        if len(got) >= count:
            stop.set()

    broker.consume(queue, prefetch, cb)
    t = threading.Thread(target=broker.serve, args=(stop,))
    t.start()
    stop.wait(5)
    t.join(5)
    return got


def test_closing_a_connection_redelivers_its_unacked(hub):
    first = MemoryBroker(hub)
    first.declare(["q"])
    first.publish([("q", b"1"), ("q", b"2")])
    held = collect(first, "q", 2, 2, ack=False)
    assert [d.body for d in held] == [b"1", b"2"]
    first.close()
    again = collect(MemoryBroker(hub), "q", 5, 2)
    assert sorted(d.body for d in again) == [b"1", b"2"] and all(d.redelivered for d in again)


def test_prefetch_is_respected(hub):
    b = MemoryBroker(hub)
    b.declare(["q"])
    b.publish([("q", bytes([i])) for i in range(5)])
    held = collect(b, "q", 2, 2, ack=False)
    assert len(held) == 2 and b.depth("q") == 3


def test_dead_letters_keep_their_reason(hub):
    b = MemoryBroker(hub)
    b.declare(["q"])
    b.dead_letter("q", b"x", "because")
    taken = []
    assert b.take_dead("q", taken.append) == 1
    assert [(dead.body, dead.reason) for dead in taken] == [(b"x", "because")]
    assert b.take_dead("q", taken.append) == 0


def test_a_dead_letter_leaves_its_queue_only_once_it_is_stored(hub):
    b = MemoryBroker(hub)
    b.declare(["q"])
    for body in (b"first", b"second"):
        b.dead_letter("q", body, "why")

    def store_fails(dead):
        raise OSError("ledger down")

    with pytest.raises(OSError):
        b.take_dead("q", store_fails)
    stored = []
    assert b.take_dead("q", stored.append) == 2
    assert [d.body for d in stored] == [b"first", b"second"]  # none lost, in order


def test_a_changed_prefetch_bounds_what_is_delivered_next(hub):
    b = MemoryBroker(hub)
    b.declare(["q"])
    b.publish([("q", bytes([i])) for i in range(6)])
    held = collect(b, "q", 4, 4, ack=False)
    b.set_prefetch("q", 1)
    for d in held:
        d.ack()
    stop = threading.Event()
    t = threading.Thread(target=b.serve, args=(stop,))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while b.depth("q") > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join(5)
    assert b.depth("q") == 1  # one more delivered, held unacked by collect's callback; the rest wait
    b.set_prefetch("nowhere", 3)  # no consumer of that queue: nothing to change
