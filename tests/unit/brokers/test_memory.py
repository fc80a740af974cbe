"""The broker contract on the in-process broker, plus what only it does."""
from __future__ import annotations

import pytest

from swarm.backends import open_broker
from swarm.brokers.memory import MemoryBroker
from tests.support.contracts.broker import BrokerContract


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def connect(self, hub):
        return lambda: MemoryBroker(hub)


def test_a_dead_letter_put_back_keeps_its_place(hub):
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


def test_a_broker_that_never_serves_is_the_same_in_process_broker():
    serving, publishing = open_broker("memory://same"), open_broker("memory://same", serve=False)
    assert isinstance(publishing, MemoryBroker) and publishing.hub is serving.hub


def test_a_delayed_message_due_while_its_queue_is_full_waits_for_room(hub):
    import time

    b = MemoryBroker(hub)
    b.declare(["q"], {"q": 1})
    b.publish([("q", b"first")])
    b.publish([("q", b"later")], delay=0.01)
    time.sleep(0.05)
    with hub.cond:
        hub.promote_due(time.monotonic())
    assert (b.depth("q", delayed=False), b.depth("q")) == (1, 2)  # due, but waiting outside the full queue
    assert b.purge("q") == 1
    time.sleep(0.1)
    with hub.cond:
        hub.promote_due(time.monotonic())
    assert [body for body, _, _ in hub.queues["q"]] == [b"later"]
