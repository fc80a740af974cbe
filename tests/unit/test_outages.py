"""Outages wait, faults count: a backend that is down costs a message no retry, and is logged once."""
import logging

import pytest

from swarm.errors import BackendError, BackendRefused
from swarm.ledger import MessageState
from swarm.runtime import DONE, REQUEUED
from tests.unit.test_runtime import RUN, FakeDelivery, envelope, planned, setup  # noqa: F401
from tests.unit.toyjob import job, use_sink

SINK = "swarm.toy.sink"


class FlakyTables:
    """Reads that fail while ``down``, as an HBase Thrift server that is away."""

    def __init__(self):
        self.down = True

    def handler(self, ctx, msg):
        if self.down:
            raise BackendError("HBase at thrift1:9090: read out: connection refused")
        return None


def test_a_table_outage_longer_than_the_retry_budget_spends_no_retry(setup, ledger, monkeypatch, caplog):
    tables = FlakyTables()
    use_sink(monkeypatch, tables.handler)
    proc = setup()
    body = planned(ledger, envelope(n=1))
    budget = job.stages["sink"].retry.max_attempts
    with caplog.at_level(logging.WARNING, logger="swarm.worker"):
        for _ in range(3 * budget):  # three times every delivery a fault would be allowed
            assert proc.handle(FakeDelivery(SINK, body)) == REQUEUED
        assert ledger.counts(RUN) == {MessageState.QUEUED: 1}
        [failure] = ledger.failures(RUN)
        assert failure.attempts == 0 and "waited out an outage: BackendError: HBase at thrift1:9090" in failure.error
        tables.down = False
        assert proc.handle(FakeDelivery(SINK, body)) == DONE
    assert ledger.counts(RUN) == {MessageState.DONE: 1}
    said = [r.getMessage() for r in caplog.records]
    assert sum("is unreachable" in line for line in said) == 1  # once per outage, not once per message
    assert [line for line in said if "is back after" in line] == [
        next(line for line in said if "is back after" in line)]
    assert f"{3 * budget} message(s) waited it out" in next(line for line in said if "is back after" in line)


def test_a_handlers_own_fault_still_counts(setup, ledger):
    proc = setup({"1": "crash"})
    body = planned(ledger, envelope(n=1))
    outcomes = [proc.handle(FakeDelivery(SINK, body)) for _ in range(job.stages["sink"].retry.max_attempts)]
    assert outcomes[-1] == "dead"


def test_a_refund_gives_the_attempt_back_once(ledger):
    from swarm.ledger import Message

    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})
    env = envelope(n=4)
    msg = Message(env.id, env.stage, env.chunk, planned(ledger, env))
    claim = ledger.claim(RUN, "main", msg, "w1", 30)
    ledger.release(msg.id, claim.token, MessageState.QUEUED, "outage", refund=True)
    # again, as after a lost COMMIT answer
    ledger.release(msg.id, claim.token, MessageState.QUEUED, "outage", refund=True)
    assert ledger.claim(RUN, "main", msg, "w1", 30).attempts == 1
    with pytest.raises(ValueError):
        ledger.release(msg.id, claim.token, "dead", "x", refund=True)


def test_a_refusal_stops_the_master_at_once_instead_of_waiting(ledger, tables, monkeypatch):
    from master.coordinator import Master, MasterSettings
    from swarm.brokers.memory import MemoryBroker

    def refused(*args):
        raise BackendRefused("MySQL ledger mysql://swarm:***@db1/swarm: error 1045: Access denied")

    monkeypatch.setattr(ledger, "lock_master", refused)
    master = Master(job, {"date": "2026-11-22"}, MemoryBroker(), ledger, tables, MasterSettings(patience=3600))
    with pytest.raises(BackendRefused, match="1045"):
        master.run()
