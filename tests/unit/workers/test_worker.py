"""A whole worker on the in-process broker: bounded pools, failures, draining."""
import dataclasses
import threading
import time

from swarm.broker import stage_queue
from swarm.envelope import Envelope, encode
from swarm.flow import prefetch_at
from swarm.ledger import Message, MessageState
from swarm.signing import process_keys
from swarm.testing import run_job
from tests.unit.toyjob import job, use_sink
from workers.worker import Worker

RUN = "toy@date=2026-11-22"


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_raising_handler_does_not_stop_the_worker(ledger, tables):
    tables.create_table("out", ["f"])
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, workers=1,
                  options={"count": 6, "behaviour": {"2": "crash", "6": "crash"}})
    assert run.status == "failed"
    assert "2 dead-lettered" in run.error and "ValueError: boom" in run.error
    counts = ledger.counts(run.id)
    # six doubles, four sinks; two sinks dead after retries
    assert counts == {MessageState.DONE: 6 + 4, MessageState.DEAD: 2}
    assert ledger.counters(run.id) == {"doubled": 6, "sunk": 4, "total": 0 + 4 + 8 + 10}


def test_abort_fails_the_run_with_the_reason(ledger, tables):
    tables.create_table("out", ["f"])
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 3, "behaviour": {"4": "abort"}})
    assert run.status == "failed" and "4 is not allowed" in run.error


def test_failed_run_resumes_after_its_dead_letters_are_replayed(ledger, tables, unique):
    from swarm import dlq
    from swarm.brokers.memory import MemoryBroker, hub

    tables.create_table("out", ["f"])
    params = {"date": "2026-11-22"}
    failed = run_job(job, params, tables, ledger, options={"count": 3, "behaviour": {"2": "crash"}}, hub_name=unique)
    assert failed.status == "failed"
    broker = MemoryBroker(hub(unique))
    assert dlq.collect(broker, ledger, job) == 1
    [letter] = ledger.dead_letters()
    assert letter.message_id == f"{failed.id}/main/n1/sink/0.0" and "ValueError: boom on 2" in letter.reason
    # The cause is fixed (no more crash); the operator replays and starts the master again.
    assert dlq.replay(broker, ledger, [letter.id]) == 1
    done = run_job(job, params, tables, ledger, options={"count": 3}, hub_name=unique)
    assert (done.id, done.status, done.error) == (failed.id, "done", None)
    assert ledger.counters(done.id)["sunk"] == 3
    assert ledger.dead_letters() == []  # replayed ones are no longer listed


def publish_planned(broker, ledger, numbers):
    """Sink messages for ``numbers``, checkpointed in the ledger and published, as the master does."""
    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})
    messages = []
    for n in numbers:
        env = Envelope("toy", RUN, "main", "sink", f"n{n}", "0", 1, {"n": n})
        messages.append(Message(env.id, env.stage, env.chunk, encode(env, process_keys())))
    ledger.save_plan(RUN, "main", messages)
    broker.publish([(stage_queue("toy", "sink"), m.body) for m in messages])


def serve_sink(broker, ledger, tables, count):
    """A worker on the sink stage, with ``count`` messages waiting; returns its thread and stop event."""
    tables.create_table("out", ["f"])
    worker = Worker(job, broker, ledger, tables, stages=["sink"])
    broker.declare([stage_queue("toy", "sink")])
    publish_planned(broker, ledger, range(count))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.worker = worker
    thread.start()
    return thread, stop


def worker_pools(thread):
    return thread.worker.pools


def consumer_prefetch(broker, stage):
    [prefetch] = [c.prefetch for c in broker._consumers if c.queue == stage_queue("toy", stage)]
    return prefetch


def test_prefetch_bounds_what_a_worker_holds(broker, ledger, tables, monkeypatch):
    entered, release = threading.Semaphore(0), threading.Event()

    def slow(ctx, msg):
        entered.release()
        release.wait(10)
        return []

    stage = use_sink(monkeypatch, slow)
    t, stop = serve_sink(broker, ledger, tables, 10)
    try:
        for _ in range(stage.pool):
            assert entered.acquire(timeout=10)
        time.sleep(0.2)
        assert broker.depth(stage_queue("toy", "sink")) == 10 - stage.bound  # the rest waits in the broker
        release.set()
        assert wait_for(lambda: ledger.counts(RUN).get(MessageState.DONE) == 10)
    finally:
        release.set()
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_stop_drains_in_flight_messages(broker, ledger, tables, monkeypatch):
    entered = threading.Event()

    def slow(ctx, msg):
        entered.set()
        time.sleep(0.3)
        return []

    use_sink(monkeypatch, slow)
    t, stop = serve_sink(broker, ledger, tables, 1)
    assert entered.wait(10)
    stop.set()  # while the handler is busy
    t.join(10)
    assert ledger.counts(RUN) == {MessageState.DONE: 1}
    assert broker.depth(stage_queue("toy", "sink")) == 0


def test_a_stage_longer_than_the_consumer_timeout_is_reported_at_start(broker, ledger, tables, caplog, monkeypatch):
    monkeypatch.setattr(broker, "consumer_timeout_note", lambda queue, timeout: f"{queue}: set consumer_timeout")
    Worker(job, broker, ledger, tables, stages=["sink"]).start()
    assert "swarm.toy.sink: set consumer_timeout" in caplog.text


def test_stages_that_take_batches_give_the_same_result(ledger, tables, monkeypatch):
    tables.create_table("out", ["f"])
    monkeypatch.setitem(job.stages, "double", dataclasses.replace(job.stages["double"], batch=3, pool=3))
    use_sink(monkeypatch, job.stages["sink"].handler, batch=4, pool=2)
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 40})
    assert run.status == "done"
    assert ledger.counters(run.id) == {"doubled": 40, "sunk": 40, "total": sum(2 * n for n in range(40))}
    assert ledger.counts(run.id) == {MessageState.DONE: 80}


def test_quiet_gives_a_stage_s_threads_back_and_a_backlog_takes_them_again(broker, ledger, tables, monkeypatch):
    def slow(ctx, msg):
        time.sleep(0.02)  # threads that wait (on a backend) scale: the controller sees throughput rise
        return []

    use_sink(monkeypatch, slow, pool=4, pool_min=1)
    t, stop = serve_sink(broker, ledger, tables, 0)
    try:
        assert wait_for(lambda: "sink" in worker_pools(t))
        pool = worker_pools(t)["sink"]
        assert pool.limit == 4  # the declared pool, as a fixed pool would be
        assert wait_for(lambda: pool.limit == 1, timeout=20)  # quiet windows give threads back
        low = pool.limit
        # the prefetch follows: the one working thread's batch (of 1) and one more
        assert wait_for(lambda: consumer_prefetch(broker, "sink") == 2)
        publish_planned(broker, ledger, range(400))
        assert wait_for(lambda: pool.limit > low, timeout=20)  # the backlog takes them again
        assert wait_for(lambda: consumer_prefetch(broker, "sink") == prefetch_at(job.stages["sink"], pool.limit))
        assert wait_for(lambda: ledger.counts(RUN).get(MessageState.DONE) == 400, timeout=60)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_a_stage_whose_successor_is_full_works_on_pool_min_threads_until_it_has_room(broker, ledger, tables,
                                                                                     monkeypatch, caplog):
    import logging

    from swarm.broker import declare_stages

    caplog.set_level(logging.INFO, logger="swarm.worker")
    from tests.unit import toyjob

    tables.create_table("out", ["f"])
    use_sink(monkeypatch, toyjob.sink, max_queue=2)
    sink, double = stage_queue("toy", "sink"), stage_queue("toy", "double")
    declare_stages(broker, job)
    broker.publish([(sink, b"waiting"), (sink, b"waiting")])  # full, and nothing consumes it yet
    worker = Worker(job, broker, ledger, tables, stages=["double"])
    worker.processor.backpressure.cool_down = 0.5
    worker.processor.backpressure.patience = 0.3  # then the doubles are handed back, and the stage held back
    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})
    messages = []
    for n in range(6):
        env = Envelope("toy", RUN, "main", "double", f"n{n}", "0", 1, {"n": n})
        messages.append(Message(env.id, env.stage, env.chunk, encode(env, process_keys())))
    ledger.save_plan(RUN, "main", messages)
    broker.publish([(double, m.body) for m in messages])
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        assert wait_for(lambda: "double" in worker.pools)
        pool, stage = worker.pools["double"], job.stages["double"]
        assert pool.limit == stage.pool
        assert wait_for(lambda: pool.limit == stage.pool_min)  # held back
        assert wait_for(lambda: consumer_prefetch(broker, "double") == prefetch_at(stage, stage.pool_min))
        taken = [0]

        def drained_all():
            taken[0] += broker.purge(sink)  # the sink drains; the doubles' children go in as it does
            return taken[0] >= 8

        assert wait_for(drained_all, timeout=30)
        assert taken[0] == 8  # the two waiting, and each double's child once
        assert wait_for(lambda: "the queues it sends to have room again" in caplog.text)  # the cap lifts
        assert wait_for(lambda: ledger.counts(RUN).get(MessageState.DONE) == 6)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert ledger.counts(RUN) == {MessageState.DONE: 6, MessageState.QUEUED: 6}  # each double done, its child out
    assert ledger.failures(RUN) == []  # none failed, no attempt spent
    assert "stage double: a queue it sends to stays full" in caplog.text
