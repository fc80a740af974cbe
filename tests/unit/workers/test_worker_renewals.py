"""A worker's lease renewals: every third of a lease from the last renewal's start, however long one takes."""
from tests.unit.toyjob import job
from workers import worker as worker_mod
from workers.worker import Worker

PERIOD = 1.0  # a third of the lease below
SLOW = 0.8  # each renewal's time on a slow link


class FakeTime:
    """The worker's monotonic clock, moved only by the waits and renewals below."""

    def __init__(self):
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_a_slow_renewal_does_not_push_the_next_one_back(broker, ledger, tables, monkeypatch):
    clock = FakeTime()
    monkeypatch.setattr(worker_mod, "time", clock)
    worker = Worker(job, broker, ledger, tables, lease=3 * PERIOD)
    started: list[float] = []

    def renew() -> None:
        started.append(clock.now)
        clock.now += SLOW

    def wait(seconds: float) -> bool:
        clock.now += seconds
        return len(started) == 4  # stop after the fourth renewal

    monkeypatch.setattr(worker.processor, "renew_leases", renew)
    monkeypatch.setattr(worker._housekeeping_stop, "wait", wait)
    worker._renewing()
    gaps = [round(b - a, 6) for a, b in zip(started, started[1:])]
    assert gaps == [PERIOD] * 3  # not PERIOD + SLOW: a lease would lose SLOW of its length at every renewal
