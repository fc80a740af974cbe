"""Backpressure on the in-process broker: a full bounded successor slows its producer; nothing lost, no retry."""
import logging
import threading
import time

import pytest

from swarm import metrics
from swarm.backpressure import PAUSE_CAP, PAUSE_FIRST, Backpressure
from swarm.broker import declare_stages, stage_queue
from swarm.errors import QueueFull
from swarm.ledger import MessageState
from swarm.middleware import Middleware, Middlewares
from swarm.runtime import DONE, REQUEUED, SKIPPED, Processor
from swarm.testing import run_job
from tests.unit import toyjob
from tests.unit.test_runtime import KEYS, RUN, FakeDelivery, envelope, planned
from tests.unit.toyjob import job, use_sink

DOUBLE, SINK = stage_queue("toy", "double"), stage_queue("toy", "sink")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class Refusing:
    """A publish that refuses the messages of ``full`` queues ``times`` times, then takes everything."""

    def __init__(self, full, times):
        self.full, self.times, self.calls = set(full), times, []

    def __call__(self, messages):
        self.calls.append(list(messages))
        refused = [i for i, (queue, _) in enumerate(messages) if queue in self.full]
        if refused and len(self.calls) <= self.times:
            raise QueueFull(self.full, refused)


# the publish that waits --------------------------------------------------------------------------


def test_a_publish_offers_what_a_full_queue_refused_again_until_it_is_taken():
    clock = Clock()
    bp = Backpressure(patience=5.0, cool_down=5.0, clock=clock, sleep=clock.sleep)
    publish = Refusing({"b"}, times=3)
    heard = []
    bp.publish(publish, [("a", b"1"), ("b", b"2"), ("a", b"3"), ("b", b"4")], on_full=heard.append)
    assert [len(c) for c in publish.calls] == [4, 2, 2, 2]  # only the refused ones again
    assert publish.calls[-1] == [("b", b"2"), ("b", b"4")]
    assert len(heard) == 3
    assert not bp.cooling(["b"])  # it waited within its patience: the stage need not be held back


def test_once_patience_runs_out_queue_full_names_what_is_still_refused_in_the_callers_batch():
    clock = Clock()
    bp = Backpressure(patience=1.0, clock=clock, sleep=clock.sleep)
    with pytest.raises(QueueFull) as full:
        bp.publish(Refusing({"b"}, times=1000), [("a", b"1"), ("b", b"2"), ("a", b"3"), ("b", b"4")])
    assert full.value.refused == {1, 3} and full.value.queue == "b"
    assert clock.now <= 1.0  # it waited within its patience, and no longer
    assert bp.cooling(["b"]) and not bp.cooling(["a"])  # the stages sending to b are held back a while
    clock.now += bp.cool_down
    assert not bp.cooling(["b"])  # cooled down


def test_a_parents_delay_grows_while_its_queue_stays_full():
    clock = Clock()
    bp = Backpressure(cool_down=5.0, clock=clock)
    assert bp.pause(["b"]) == PAUSE_FIRST
    for _ in range(100):  # refusing for 400 s without a pause of cool_down seconds
        bp.refused(["b"])
        clock.now += 4.0
    assert bp.pause(["b"]) == PAUSE_CAP
    clock.now += 10.0  # cooled down: the next streak starts short again
    bp.refused(["b"])
    assert bp.pause(["b"]) == PAUSE_FIRST


# on the message path -----------------------------------------------------------------------------


class Heard(Middleware):
    def __init__(self):
        self.full = []

    def on_queue_full(self, stage_name, refused):
        self.full.append((stage_name, refused))


@pytest.fixture
def bounded(broker, ledger, tables, monkeypatch):
    """A processor of the toy job whose sink stage's queue holds at most 2; publishes wait 0.2 s for it."""
    tables.create_table("out", ["f"])
    use_sink(monkeypatch, toyjob.sink, max_queue=2)
    declare_stages(broker, job)
    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})
    heard = Heard()
    proc = Processor(job, broker, ledger, tables, "w1", lease=30, backend_pause=0.01, keys=KEYS,
                     middleware=Middlewares([heard]))
    proc.backpressure.patience = 0.2
    proc.heard = heard
    return proc


def doubles(ledger, numbers):
    return [FakeDelivery(DOUBLE, planned(ledger, envelope("double", n))) for n in numbers]


def delayed(hub, queue):
    return [body for _, _, name, body in hub.delayed if name == queue]


def test_parents_whose_children_a_full_queue_refused_come_back_done_and_publish_them(bounded, broker, hub, ledger,
                                                                                      caplog):
    broker.publish([(SINK, b"waiting")])  # one message already waits: room for one more
    batch = doubles(ledger, [1, 2, 3])
    with caplog.at_level(logging.INFO, logger="swarm.worker"):
        assert bounded.handle_batch(batch) == [DONE, REQUEUED, REQUEUED]
    assert all(d.acked == 1 and not d.requeued for d in batch)
    assert broker.depth(SINK) == 2  # the bound holds: the first parent's child went in
    # Every parent is done and each child recorded; the refused children wait in the ledger, queued,
    # and their parents on double's delay queue.
    assert ledger.counts(RUN) == {MessageState.DONE: 3, MessageState.QUEUED: 3}
    assert sorted(delayed(hub, DOUBLE)) == sorted(bytes(d.body) for d in batch[1:])
    assert ledger.failures(RUN) == []  # no fault, no error recorded, no attempt spent
    assert bounded.heard.full and {stage for stage, _ in bounded.heard.full} == {"sink"}
    assert bounded.backpressure.cooling([SINK])  # the stages sending to sink are held back a while
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]  # not an outage

    assert broker.purge(SINK) == 2  # the sink drains
    comeback = [FakeDelivery(DOUBLE, body) for body in delayed(hub, DOUBLE)]
    assert [bounded.handle(d) for d in comeback] == [SKIPPED, SKIPPED]  # done: they publish their children
    assert broker.depth(SINK, delayed=False) == 2


def test_a_publish_that_finds_room_within_its_patience_needs_no_hand_back(bounded, broker, ledger):
    bounded.backpressure.patience = 30.0
    broker.publish([(SINK, b"one"), (SINK, b"two")])  # full
    drained = threading.Timer(0.1, lambda: broker.purge(SINK))  # the sink takes them meanwhile
    drained.start()
    [d] = doubles(ledger, [1])
    assert bounded.handle(d) == DONE
    drained.join()
    assert broker.depth(SINK) == 1 and ledger.counts(RUN) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
    assert not bounded.backpressure.cooling([SINK])  # it waited, handed nothing back: no need to hold back


def test_a_done_parent_that_meets_the_queue_full_again_is_deferred_again(bounded, broker, hub, ledger):
    broker.publish([(SINK, b"one"), (SINK, b"two")])
    [d] = doubles(ledger, [1])
    assert bounded.handle(d) == REQUEUED
    [body] = delayed(hub, DOUBLE)
    hub.delayed.clear()
    again = FakeDelivery(DOUBLE, body)
    assert bounded.handle(again) == REQUEUED  # still full: back on the delay queue, acked
    assert again.acked == 1 and delayed(hub, DOUBLE) == [body]
    assert ledger.counts(RUN) == {MessageState.DONE: 1, MessageState.QUEUED: 1}


def slow_sink(ctx, msg):
    time.sleep(0.01)  # slower than double: its queue fills
    return toyjob.sink(ctx, msg)


def test_a_job_with_a_bounded_stage_runs_to_the_end_within_the_bound(ledger, tables, monkeypatch, unique):
    from swarm.brokers.memory import hub

    tables.create_table("out", ["f"])
    use_sink(monkeypatch, slow_sink, max_queue=3)
    refused = metrics.QUEUE_FULL.labels("toy", "sink")
    before = refused._value.get()
    memory, seen, stop = hub(unique), [], threading.Event()

    def sample():
        while not stop.is_set():
            with memory.cond:
                if SINK in memory.queues:
                    seen.append(len(memory.queues[SINK]))
            stop.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        run = run_job(job, {"date": "2026-11-22"}, tables, ledger, workers=2, options={"count": 40},
                      hub_name=unique)
    finally:
        stop.set()
        sampler.join()
    assert run.status == "done", run.error
    assert ledger.counts(run.id) == {MessageState.DONE: 80}
    assert ledger.counters(run.id) == {"doubled": 40, "sunk": 40, "total": sum(2 * n for n in range(40))}
    assert seen and max(seen) <= 3
    assert refused._value.get() > before  # the sink's queue did fill: double waited for it
