"""Fleet control on an in-process fleet: pausing a stage across workers, resuming, a worker started paused, reload."""
from __future__ import annotations

import logging
import threading

import pytest

from swarm.broker import stage_queue
from swarm.brokers.memory import MemoryBroker
from swarm.config import load as load_config
from swarm.ledger import ControlState, MessageState
from tests.support.waiting import wait_until
from tests.unit.toyjob import job, use_sink
from tests.unit.workers.test_worker import RUN, publish_planned
from workers.worker import Worker

SINK = stage_queue("toy", "sink")
POLL = 0.05  # the workers' look at the controls, quicker than a second for tests


class Fleet:
    """Worker threads on one in-process hub, each with a broker connection of its own, serving ``sink``."""

    def __init__(self, hub, ledger, tables, config=None):
        self.hub, self.ledger, self.tables, self.config = hub, ledger, tables, config
        self.workers: list[tuple[Worker, threading.Thread, threading.Event]] = []

    def start(self, n: int = 1) -> list[Worker]:
        started = []
        for _ in range(n):
            worker = Worker(job, MemoryBroker(self.hub), self.ledger, self.tables, stages=["sink"],
                            config=self.config)
            worker.control.interval = POLL
            stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
            thread.start()
            self.workers.append((worker, thread, stop))
            started.append(worker)
        wait_until(lambda: all("sink" in w.pools for w in started), "the workers serving")
        return started

    def stop(self, worker: Worker | None = None) -> None:
        for w, thread, stop in list(self.workers):
            if worker is None or w is worker:
                stop.set()
                thread.join(30)
                assert not thread.is_alive()
                self.workers.remove((w, thread, stop))


@pytest.fixture
def fleet(hub, ledger, tables):
    tables.create_table("out", ["f"])
    made = Fleet(hub, ledger, tables)
    yield made
    made.stop()


@pytest.fixture
def slow_sink(monkeypatch):
    """The sink handler records who started what and takes a moment; ``started`` lists the numbers."""
    started: list[int] = []
    lock = threading.Lock()
    release = threading.Event()
    release.set()

    def handler(ctx, msg):
        with lock:
            started.append(msg.payload["n"])
        release.wait(30)
        return []

    use_sink(monkeypatch, handler, pool=2, batch=2)
    handler.started, handler.release = started, release
    return handler


def done(ledger) -> int:
    return ledger.counts(RUN).get(MessageState.DONE, 0)


def attempts(ledger) -> set[int]:
    return {int(r[0]) for r in ledger._rows("SELECT attempts FROM swarm_messages")}


def held(ledger) -> int:
    return ledger.counts(RUN).get(MessageState.CLAIMED, 0)


def test_a_paused_stage_takes_no_new_work_on_any_worker_and_resumes_to_exactly_once(fleet, broker, ledger,
                                                                                     slow_sink):
    slow_sink.release.clear()  # handlers hold their messages until the pause is in force
    workers = fleet.start(2)
    publish_planned(broker, ledger, range(40))
    wait_until(lambda: len(slow_sink.started) >= 2, "handlers running on the workers")
    ledger.set_control("toy", "sink", ControlState.PAUSED, "ops@test", "test")
    wait_until(lambda: all(w.pools["sink"].paused for w in workers), "every worker pausing the stage", timeout=10)
    assert all(w.pools["sink"].waiting == 0 for w in workers)  # prefetched, not started: handed back
    slow_sink.release.set()  # the in-flight handlers finish, and their messages are acked done
    wait_until(lambda: held(ledger) == 0, "the in-flight work finished")
    finished = done(ledger)
    assert finished == len(slow_sink.started)
    assert broker.depth(SINK) == 40 - finished  # the rest waits on the broker, nothing lost
    assert not [c for c in broker._consumers if c.queue == SINK]

    ledger.lift_controls("toy", "sink")
    wait_until(lambda: done(ledger) == 40, "the rest done after the resume")
    assert sorted(slow_sink.started) == list(range(40))  # each handled once: none lost, none twice
    assert ledger.counts(RUN) == {MessageState.DONE: 40}
    assert attempts(ledger) == {1}  # a delivery handed back by a pause spent no attempt


def test_pausing_every_stage_of_the_job_pauses_this_one_and_resuming_one_stage_does_not_lift_it(fleet, broker,
                                                                                                   ledger, slow_sink):
    [worker] = fleet.start(1)
    ledger.set_control("toy", "", ControlState.PAUSED, "ops@test", "")
    wait_until(lambda: worker.pools["sink"].paused, "the job's pause reaching the stage")
    ledger.set_control("toy", "sink", ControlState.PAUSED, "ops@test", "")
    ledger.lift_controls("toy", "sink", (ControlState.PAUSED,))
    publish_planned(broker, ledger, range(5))
    assert worker.control.look() and worker.pools["sink"].paused  # the job's pause still holds the stage
    assert slow_sink.started == [] and broker.depth(SINK) == 5
    ledger.lift_controls("toy")
    wait_until(lambda: done(ledger) == 5, "the work done once the job's pause is lifted")


def test_a_worker_started_while_its_stage_is_paused_stays_paused(fleet, broker, ledger, slow_sink):
    [first] = fleet.start(1)
    publish_planned(broker, ledger, range(3))
    wait_until(lambda: done(ledger) == 3, "the first messages done")
    ledger.set_control("toy", "sink", ControlState.PAUSED, "ops@test", "deploy")
    wait_until(lambda: first.pools["sink"].paused, "the pause in force")
    fleet.stop(first)  # restarted: a new worker process comes up while the stage is paused
    [second] = fleet.start(1)
    assert second.pools["sink"].paused
    assert not [c for c in broker._consumers if c.queue == SINK]
    publish_planned(broker, ledger, range(3, 6))  # more work arrives while it is paused: it waits on the broker
    assert second.control.look() and second.pools["sink"].paused and broker.depth(SINK) == 3
    ledger.lift_controls("toy")
    wait_until(lambda: done(ledger) == 6, "the rest done after the resume")


class FailingControls:
    """A ledger whose controls cannot be read (an outage); everything else is the real one's."""

    def __init__(self, ledger):
        self._ledger, self.down = ledger, False

    def __getattr__(self, name):
        return getattr(self._ledger, name)

    def controls(self, job=None):
        from swarm.errors import BackendError

        if self.down:
            raise BackendError("MySQL ledger db1: connection refused")
        return self._ledger.controls(job)


def test_a_ledger_outage_keeps_the_last_known_controls_and_is_said_once(broker, ledger, tables, caplog):
    tables.create_table("out", ["f"])
    flaky = FailingControls(ledger)
    worker = Worker(job, broker, flaky, tables, stages=["sink"])
    ledger.set_control("toy", "sink", ControlState.PAUSED, "ops@test", "")
    worker.start()
    assert worker.pools["sink"].paused
    flaky.down = True
    ledger.lift_controls("toy")
    with caplog.at_level(logging.WARNING, logger="swarm.control"):
        assert not worker.control.look() and not worker.control.look()
    assert worker.pools["sink"].paused  # the last controls known stay in force
    assert caplog.text.count("cannot read the fleet controls") == 1 and "sink paused" in caplog.text
    flaky.down = False
    assert worker.control.look()
    assert not worker.pools["sink"].paused
    for pool in worker.pools.values():
        pool.shutdown()


def test_a_reload_applies_the_log_level_and_the_lease_and_names_what_needs_a_restart(hub, ledger, tables, tmp_path,
                                                                                       caplog, monkeypatch):
    tables.create_table("out", ["f"])
    path = tmp_path / "swarm.toml"
    path.write_text('[worker]\nlease = 30\n[log]\nlevel = "INFO"\n')
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)  # restored after the test
    fleet = Fleet(hub, ledger, tables, config=load_config(str(path), env={}))
    [worker] = fleet.start(1)
    try:
        path.write_text('[worker]\nlease = 45\n[log]\nlevel = "DEBUG"\n[backends]\nbroker = "amqp://mq2/"\n')
        with caplog.at_level(logging.INFO, logger="swarm.control"):
            ledger.set_control("", "", ControlState.RELOAD, "ops@test", "")
            wait_until(lambda: worker.lease == 45.0, "the reload applied")
        assert logging.getLogger().level == logging.DEBUG
        assert worker.processor.lease == 45.0
        assert "needs a restart: backends.broker 'memory://' -> 'amqp://mq2/'" in caplog.text
    finally:
        fleet.stop()
