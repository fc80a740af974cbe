"""A drained job's master publishes and plans nothing new, keeps its checkpoint exact, and finishes once lifted."""
from __future__ import annotations

import threading

import pytest

from master.coordinator import Master, MasterSettings
from swarm.brokers.memory import MemoryBroker
from swarm.fleetcontrol import summary
from swarm.ledger import ControlState, MessageState, PhaseState
from swarm.local import local_fleet
from tests.support.waiting import wait_until
from tests.unit.toyjob import job

PARAMS = {"date": "2026-11-22"}
RUN = "toy@date=2026-11-22"
COUNT = 12


class Killed(BaseException):
    """Stands for the master's process killed where it is raised."""


def kill(*_args):
    raise Killed


@pytest.fixture
def started(hub, ledger, tables):
    """Start a master (publishing 3 messages a batch) and two worker threads; returns the master's thread."""
    tables.create_table("out", ["f"])
    threads = []

    def start() -> threading.Thread:
        settings = MasterSettings(poll=0.02, publish_batch=3, options={"count": COUNT}, fresh_broker=True)
        master = Master(job, PARAMS, MemoryBroker(hub), ledger, tables, settings)
        result: dict = {}

        def run() -> None:
            try:
                result["run"] = master.run()
            except Killed:
                result["killed"] = True

        thread = threading.Thread(target=run, daemon=True)
        thread.result = result
        thread.start()
        threads.append(thread)
        return thread

    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2, options={"count": COUNT}):
        yield start
        for thread in threads:
            thread.join(60)


def counts(ledger):
    return ledger.counts(RUN)


def test_a_master_started_while_its_job_drains_plans_nothing_until_the_drain_is_lifted(ledger, started):
    ledger.set_control("toy", "", ControlState.DRAINING, "ops@test", "deploy")
    master = started()
    wait_until(lambda: ledger.get_run(RUN) is not None, "the run opened")
    wait_until(lambda: summary(ledger, "toy")["drain"]["drained"], "the job drained")
    assert master.is_alive() and counts(ledger) == {}  # nothing planned, nothing published
    assert ledger.phase_state(RUN, "main") is None
    ledger.lift_controls("toy")
    master.join(60)
    assert master.result["run"].status == "done"
    assert ledger.counters(RUN) == {"doubled": COUNT, "sunk": COUNT, "total": sum(2 * n for n in range(COUNT))}


def drain_after_the_first_batch(ledger, monkeypatch, reason: str):
    """An operator drains the job just after the master's first batch is marked queued; the unpatched method."""
    marked = ledger.mark_queued

    def drain(ids):
        marked(ids)
        ledger.set_control("toy", "", ControlState.DRAINING, "ops@test", reason)

    monkeypatch.setattr(ledger, "mark_queued", drain)
    return marked


def test_a_drain_mid_publish_stops_the_batches_the_queued_work_finishes_and_the_run_ends_after_resume(
        ledger, started, monkeypatch):
    marked = drain_after_the_first_batch(ledger, monkeypatch, "end of window")
    master = started()
    wait_until(lambda: summary(ledger, "toy")["drain"] is not None and summary(ledger, "toy")["drain"]["drained"],
               "the queued work finished")
    now = counts(ledger)
    # The first batch of 3 ran to the end, children included; the other 9 roots stay planned in the checkpoint.
    assert now == {MessageState.DONE: 6, MessageState.PLANNED: COUNT - 3}
    assert ledger.phase_state(RUN, "main") == PhaseState.PLANNED
    assert master.is_alive()
    monkeypatch.setattr(ledger, "mark_queued", marked)
    ledger.lift_controls("toy")
    master.join(60)
    assert master.result["run"].status == "done"
    assert counts(ledger) == {MessageState.DONE: 2 * COUNT}
    assert ledger.counters(RUN) == {"doubled": COUNT, "sunk": COUNT, "total": sum(2 * n for n in range(COUNT))}


def test_a_master_restarted_while_draining_resumes_from_its_checkpoint(ledger, started, monkeypatch):
    marked = drain_after_the_first_batch(ledger, monkeypatch, "")
    first = started()
    wait_until(lambda: summary(ledger, "toy")["drain"] is not None and summary(ledger, "toy")["drain"]["drained"],
               "the queued work finished")
    monkeypatch.setattr(ledger, "mark_queued", marked)
    # The master is stopped (its process killed, say): the lock is let go; another master starts meanwhile.
    monkeypatch.setattr(Master, "_tend", kill)
    wait_until(lambda: not first.is_alive(), "the first master gone")
    assert first.result == {"killed": True}
    monkeypatch.undo()
    ledger.unlock_master(RUN)
    second = started()
    wait_until(lambda: ledger.get_run(RUN) is not None and second.is_alive(), "the second master holding")
    assert counts(ledger)[MessageState.PLANNED] == COUNT - 3  # it publishes nothing while the drain holds
    ledger.lift_controls("toy")
    second.join(60)
    assert second.result["run"].status == "done"
    assert counts(ledger) == {MessageState.DONE: 2 * COUNT}
