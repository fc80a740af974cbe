"""The master's publishing window: a phase goes out as its consumers keep up, checkpointed exactly."""
import dataclasses
import threading

import pytest

from master.coordinator import Master, MasterSettings
from master.window import PublishWindow
from swarm.broker import declare_stages, stage_queue
from swarm.brokers.memory import MemoryBroker
from swarm.envelope import Envelope, encode
from swarm.errors import QueueFull
from swarm.ledger import Message, MessageState, PhaseState
from swarm.local import local_fleet
from swarm.signing import process_keys
from tests.unit import toyjob
from tests.unit.toyjob import job, use_sink

RUN = "toy@date=2026-11-22"
DOUBLE, SINK = stage_queue("toy", "double"), stage_queue("toy", "sink")


@pytest.fixture
def planned(broker, ledger):
    """23 root messages of the toy job's double stage, planned in the ledger as the master plans them."""
    declare_stages(broker, job)
    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})
    messages = []
    for n in range(23):
        env = Envelope("toy", RUN, "main", "double", f"n{n:02d}", "0", 1, {"n": n})
        messages.append(Message(env.id, env.stage, env.chunk, encode(env, process_keys())))
    ledger.save_plan(RUN, "main", messages)
    return messages


def window(broker, ledger, size, batch=4):
    return PublishWindow(job, RUN, "main", broker, ledger, size, batch)


def states(ledger):
    return ledger.counts(RUN, "main")


def test_a_window_keeps_at_most_its_size_ready_and_follows_the_consumers(broker, ledger, planned):
    w = window(broker, ledger, 5)
    assert w.top_up() is False
    assert broker.depth(DOUBLE) == 5 and states(ledger) == {MessageState.QUEUED: 5, MessageState.PLANNED: 18}
    assert w.top_up() is False and broker.depth(DOUBLE) == 5  # no room: nothing more
    taken = []
    broker.consume(DOUBLE, 3, taken.append)
    for _ in range(3):
        broker._next_ready()  # three delivered (unacked: no longer ready)
    assert w.top_up() is False and broker.depth(DOUBLE) == 5
    assert states(ledger) == {MessageState.QUEUED: 8, MessageState.PLANNED: 15}
    while not w.top_up():
        broker.purge(DOUBLE)
    assert states(ledger) == {MessageState.QUEUED: 23}
    assert w.planned is False and w.open is False


def on_queue(hub, queue):
    return [body for body, _, _ in hub.queues[queue]]


def test_published_in_plan_order_and_marked_queued_only_once_confirmed(broker, hub, ledger, planned):
    w = window(broker, ledger, 0)  # 0: the whole phase at once
    assert w.top_up() is True
    assert on_queue(hub, DOUBLE) == [m.body for m in planned]
    assert states(ledger) == {MessageState.QUEUED: 23}


def test_a_stage_bound_smaller_than_the_window_is_the_limit(broker, ledger, monkeypatch):
    monkeypatch.setitem(job.stages, "double", dataclasses.replace(job.stages["double"], max_queue=4))
    w = PublishWindow(job, RUN, "main", broker, ledger, 10, 5)
    assert w.limit("double") == 4 and w.limit("sink") == 10
    assert PublishWindow(job, RUN, "main", broker, ledger, 0, 5).limit("sink") is None


def test_a_refusal_from_the_broker_leaves_the_refused_planned_for_the_next_top_up(broker, ledger, planned,
                                                                                 monkeypatch):
    real = broker.publish
    refusals = [True]

    def publish(messages, delay=0.0):
        if refusals and len(messages) > 2:  # another publisher filled the queue meanwhile: the last two refused
            refusals.pop()
            real(messages[:-2])
            raise QueueFull([DOUBLE], [len(messages) - 2, len(messages) - 1])
        real(messages, delay)

    monkeypatch.setattr(broker, "publish", publish)
    w = window(broker, ledger, 8)
    assert w.top_up() is False
    assert broker.depth(DOUBLE) == 2 and states(ledger) == {MessageState.QUEUED: 2, MessageState.PLANNED: 21}
    broker.purge(DOUBLE)
    while not w.top_up():
        broker.purge(DOUBLE)
    assert states(ledger) == {MessageState.QUEUED: 23}


def test_a_master_killed_between_publish_and_checkpoint_publishes_that_batch_again(broker, ledger, planned,
                                                                                 monkeypatch):
    import master.window as window_module

    class Killed(Exception):
        pass

    def die(name):
        if name == "master.mid_publish":
            raise Killed(name)

    monkeypatch.setattr(window_module, "failpoint", die)
    with pytest.raises(Killed):
        window(broker, ledger, 0).top_up()
    # published, not yet checkpointed: the ledger still has the batch planned
    assert broker.depth(DOUBLE) == 4 and states(ledger) == {MessageState.PLANNED: 23}
    monkeypatch.setattr(window_module, "failpoint", lambda name: None)
    assert window(broker, ledger, 0).top_up() is True  # the next master
    assert states(ledger) == {MessageState.QUEUED: 23}
    assert broker.depth(DOUBLE) == 27  # that batch twice: harmless, a claim runs each id once


def test_messages_to_publish_again_go_first_within_the_window(broker, hub, ledger, planned):
    w = window(broker, ledger, 3)
    w.top_up()
    assert broker.purge(DOUBLE) == 3
    lost = planned[:3]  # queued in the ledger, gone from the queue
    w.again(lost + lost[:1])
    assert w.open and w.top_up() is False
    assert states(ledger)[MessageState.QUEUED] == 3
    assert on_queue(hub, DOUBLE) == [m.body for m in lost]  # the window's worth, again, before the planned
    broker.purge(DOUBLE)
    assert w.top_up() is False and states(ledger)[MessageState.QUEUED] == 6


def test_a_run_with_a_small_window_and_a_bounded_stage_is_published_done_and_exact(hub, ledger, tables,
                                                                                  monkeypatch):
    tables.create_table("out", ["f"])
    use_sink(monkeypatch, toyjob.sink, max_queue=3)
    seen, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            with hub.cond:
                seen.extend(len(hub.queues[q]) for q in (DOUBLE, SINK) if q in hub.queues)
            stop.wait(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    settings = MasterSettings(poll=0.05, window=4, publish_batch=3, fresh_broker=True, options={"count": 30})
    try:
        with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2, options={"count": 30}):
            run = Master(job, {"date": "2026-11-22"}, MemoryBroker(hub), ledger, tables, settings).run()
    finally:
        stop.set()
        sampler.join()
    assert run.status == "done", run.error
    assert ledger.phase_state(run.id, "main") == PhaseState.DONE
    assert ledger.counts(run.id) == {MessageState.DONE: 60}
    assert ledger.counters(run.id) == {"doubled": 30, "sunk": 30, "total": sum(2 * n for n in range(30))}
    assert seen and max(seen) <= 4  # double's window of 4, sink's bound of 3


class Killed(BaseException):
    """A master dying at a failpoint (not an error it could wait out)."""


@pytest.mark.parametrize("point, hit", [("master.mid_publish", 3), ("master.after_publish", 1)])
def test_a_master_killed_while_publishing_a_window_is_resumed_by_the_next_and_the_run_is_exact(
        hub, ledger, tables, monkeypatch, point, hit):
    import master.coordinator as coordinator_module
    import master.window as window_module

    tables.create_table("out", ["f"])
    hits = []

    def failpoint(name):
        if name == point:
            hits.append(name)
            if len(hits) == hit:
                raise Killed(name)

    monkeypatch.setattr(window_module, "failpoint", failpoint)
    monkeypatch.setattr(coordinator_module, "failpoint", failpoint)
    settings = MasterSettings(poll=0.05, window=4, publish_batch=3, options={"count": 30})
    params = {"date": "2026-11-22"}
    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2, options={"count": 30}):
        with pytest.raises(Killed):
            Master(job, params, MemoryBroker(hub), ledger, tables, settings).run()
        assert ledger.phase_state(RUN, "main") == PhaseState.PLANNED  # published only once nothing is planned
        run = Master(job, params, MemoryBroker(hub), ledger, tables, settings).run()  # the next master
    assert run.status == "done", run.error
    assert ledger.counts(run.id) == {MessageState.DONE: 60}
    assert ledger.counters(run.id) == {"doubled": 30, "sunk": 30, "total": sum(2 * n for n in range(30))}


def test_while_a_queue_is_full_a_top_up_reads_nothing_of_the_plan(broker, ledger, planned, monkeypatch):
    reads = []
    real = ledger.planned
    monkeypatch.setattr(ledger, "planned", lambda *a, **kw: reads.append(a) or real(*a, **kw))
    w = window(broker, ledger, 20, batch=50)
    w.top_up()
    assert broker.depth(DOUBLE) == 20 and len(reads) == 1
    for _ in range(5):
        w.top_up()
    assert len(reads) == 1  # full: a look at the queue, none at the ledger
    broker.purge(DOUBLE)
    assert w.top_up() is True and reads[-2][2] == 20  # room for 20: it asks for 20 (3 are left), then sees none
