"""A worker whose broker is down at start waits for it instead of exiting (supervisord would give up)."""
import threading

from swarm.brokers.memory import MemoryBroker
from swarm.errors import BackendError
from tests.unit.toyjob import job
from workers import worker as worker_mod
from workers.worker import Worker


class DownAtFirst(MemoryBroker):
    """Refuses ``declare`` a number of times, as a broker that is still starting would."""

    def __init__(self, hub_, failures: int):
        super().__init__(hub_)
        self.failures = failures
        self.tries = 0

    def declare(self, queues, bounds=None):
        self.tries += 1
        if self.tries <= self.failures:
            raise BackendError("RabbitMQ at amqp://swarm:***@mq1:5672/swarm: cannot connect")
        super().declare(queues, bounds)


def test_the_worker_waits_for_the_broker_then_serves(hub, ledger, tables, monkeypatch):
    monkeypatch.setattr(worker_mod, "START_RETRY_FIRST", 0.01)
    broker = DownAtFirst(hub, failures=3)
    worker = Worker(job, broker, ledger, tables)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        for _ in range(1000):  # a bound for a broken worker, not a timing
            assert thread.is_alive(), "the worker exited instead of waiting"
            if worker.pools:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(10)
    assert broker.tries == 4 and set(worker.pools) == set(job.stages)
    assert not thread.is_alive()


def test_stop_while_waiting_ends_the_worker_cleanly(hub, ledger, tables):
    broker = DownAtFirst(hub, failures=10**6)
    stop = threading.Event()
    thread = threading.Thread(target=Worker(job, broker, ledger, tables).run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
