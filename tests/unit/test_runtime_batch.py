"""Batches: several deliveries of a stage claimed, handled and committed together, each with its own outcome."""
import threading
import time

import pytest

from swarm.broker import dead_letter_queue, stage_queue
from swarm.errors import BackendError, Fenced
from swarm.ledger import MessageState
from swarm.runtime import ABORTED, DONE, FENCED, REJECTED, REQUEUED, RETRY, SKIPPED, TIMED_OUT
from swarm.settle import Item
from tests.unit.test_runtime import (  # noqa: F401 - setup is a fixture
    RUN,
    FakeDelivery,
    dead_letters,
    envelope,
    planned,
    setup,
)
from tests.unit.toyjob import use_sink

SINK = stage_queue("toy", "sink")


def deliveries(ledger, *items):
    """FakeDeliveries on the sink queue: an int n is a good (planned) message for n, bytes are a raw body."""
    return [FakeDelivery(SINK, item if isinstance(item, bytes) else planned(ledger, envelope(n=item)))
            for item in items]


class Calls:
    """Wraps a method and counts how often it is called."""

    def __init__(self, monkeypatch, obj, name):
        self.count, original = 0, getattr(obj, name)

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, counted)


def test_a_mixed_batch_gives_each_delivery_its_own_outcome(setup, broker, ledger, tables):
    proc = setup({"2": "flaky", "3": "abort"})
    batch = deliveries(ledger, 1, 2, 3, b"\xc1garbage", 1, 4)
    outcomes = proc.handle_batch(batch)
    assert outcomes == [DONE, RETRY, ABORTED, REJECTED, SKIPPED, DONE]
    assert [d.acked for d in batch] == [1] * 6
    assert tables.row("out", b"row0001") == {b"f:n": b"1"} and tables.row("out", b"row0004") == {b"f:n": b"4"}
    assert not tables.row("out", b"row0002")
    assert ledger.counters(RUN) == {"sunk": 2, "total": 5}  # 1 and 4, each once
    assert {f.chunk: f.state for f in ledger.failures(RUN)} == {"n2": MessageState.QUEUED, "n3": MessageState.ABORTED}
    assert "not valid msgpack" in dead_letters(broker, SINK)[0].reason


def test_a_batch_shares_one_claim_one_publish_and_one_complete(setup, broker, ledger, monkeypatch):
    proc = setup()
    claims, publishes, completes = (Calls(monkeypatch, o, n) for o, n in
                                    ((ledger, "claim_batch"), (broker, "publish"), (ledger, "complete_batch")))
    batch = [FakeDelivery(stage_queue("toy", "double"), planned(ledger, envelope(stage="double", n=n)))
             for n in range(5)]
    assert proc.handle_batch(batch) == [DONE] * 5
    assert (claims.count, publishes.count, completes.count) == (1, 1, 1)
    assert broker.depth(SINK) == 5
    assert ledger.counts(RUN) == {MessageState.DONE: 5, MessageState.QUEUED: 5}


def test_a_table_outage_returns_the_whole_batch_and_loses_none(setup, broker, ledger, tables, monkeypatch):
    proc = setup()

    def down(mutations):
        raise BackendError("table store down")

    monkeypatch.setattr(tables, "apply", down)
    batch = deliveries(ledger, 1, 2, 3)
    assert proc.handle_batch(batch) == [REQUEUED] * 3
    assert [(d.acked, d.requeued) for d in batch] == [(1, 0)] * 3  # acked only once a delayed copy is confirmed
    assert broker.depth(SINK) == 3
    assert ledger.counts(RUN) == {MessageState.QUEUED: 3}  # released, so the copies are claimed at once
    monkeypatch.undo()
    time.sleep(0.03)  # the copies wait out backend_pause (0.01-0.02 s) on a delay queue
    assert sorted(proc.handle_batch(_take_all(broker))) == [DONE] * 3
    assert ledger.counters(RUN) == {"sunk": 3, "total": 6}


def test_a_fenced_member_does_not_stop_the_rest_of_the_batch(setup, ledger, monkeypatch):
    proc = setup()
    original = ledger.complete_batch

    def one_fenced(calls):
        outcomes = original(calls)
        return [Fenced("taken over") if call.message_id == envelope(n=2).id else o for call, o in zip(calls, outcomes)]

    monkeypatch.setattr(ledger, "complete_batch", one_fenced)
    batch = deliveries(ledger, 1, 2, 3)
    assert proc.handle_batch(batch) == [DONE, FENCED, DONE]
    assert [d.acked for d in batch] == [1, 1, 1]


def test_a_hung_handler_hands_back_the_rest_of_its_batch(setup, broker, ledger, monkeypatch):
    proc = setup()
    release, entered = threading.Event(), threading.Event()
    handled = []

    def hangs_on_one(ctx, msg):
        handled.append(msg.payload["n"])
        if msg.payload["n"] == 1:
            entered.set()
            release.wait(5)
        return None

    use_sink(monkeypatch, hangs_on_one, timeout=0.01)
    result = {}
    batch = deliveries(ledger, 1, 2, 3)
    t = threading.Thread(target=lambda: result.update(outcomes=proc.handle_batch(batch)))
    t.start()
    assert entered.wait(5)
    assert proc.expire_overdue(time.monotonic() + 1) == [envelope(n=1).id]
    # 2 and 3 never started: back on the queue at once, acked here, claimable by any worker.
    assert [d.acked for d in batch] == [1, 1, 1]
    assert broker.depth(SINK) == 3  # 1's retry (delayed) and 2 and 3 again
    assert ledger.counts(RUN) == {MessageState.QUEUED: 3}
    release.set()
    t.join(5)
    assert result["outcomes"] == [TIMED_OUT, REQUEUED, REQUEUED]
    assert handled == [1]  # the late batch did not run them after all


def test_messages_waiting_in_a_batch_keep_their_leases(setup, ledger, monkeypatch):
    proc = setup()
    entered, release = threading.Event(), threading.Event()

    def slow(ctx, msg):
        entered.set()
        release.wait(5)

    use_sink(monkeypatch, slow)
    t = threading.Thread(target=proc.handle_batch, args=(deliveries(ledger, 1, 2),))
    t.start()
    assert entered.wait(5)
    assert sorted(msg_id for msg_id, _ in proc.leases.renewable()) == sorted([envelope(n=1).id, envelope(n=2).id])
    release.set()
    t.join(5)
    assert proc.leases.renewable() == []


def test_messages_handled_in_a_batch_keep_their_leases_until_the_batch_commits(setup, ledger, monkeypatch):
    # A batch commits together: the first message's effects wait for the last handler. Were its lease let go
    # when its own handler returned, a batch longer than the lease would see it taken over and run twice.
    proc = setup()
    second, release = threading.Event(), threading.Event()

    def slow_second(ctx, msg):
        if msg.payload["n"] == 2:
            second.set()
            release.wait(5)

    use_sink(monkeypatch, slow_second)
    t = threading.Thread(target=proc.handle_batch, args=(deliveries(ledger, 1, 2),))
    t.start()
    assert second.wait(5)  # the first is handled, not committed
    assert sorted(msg_id for msg_id, _ in proc.leases.renewable()) == sorted([envelope(n=1).id, envelope(n=2).id])
    release.set()
    t.join(5)
    assert proc.leases.renewable() == []


def test_dead_letter_queue_of_the_batch_stage_is_untouched_by_good_work(setup, broker, ledger):
    assert setup().handle_batch(deliveries(ledger, 1, 2)) == [DONE, DONE]
    assert broker.depth(dead_letter_queue(SINK)) == 0


def _take_all(broker):
    hub = broker.hub
    with hub.cond:
        hub.promote_due(time.monotonic())
        bodies = [body for body, _, _ in hub.queues[SINK]]
        hub.queues[SINK].clear()
    return [FakeDelivery(SINK, body) for body in bodies]


def test_an_item_asked_for_what_an_earlier_step_has_not_set_says_which_step():
    item = Item(FakeDelivery(SINK, b""))
    for ask, step in ((item.accepted, "accepted"), (item.held, "claimed"), (item.handled, "handled")):
        with pytest.raises(AssertionError, match=f"before it was {step}"):
            ask()
