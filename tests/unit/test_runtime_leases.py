"""A worker writes its tables only while its lease surely holds: cut off from the ledger, it stops writing
before another worker can take its messages over (issue: partitions)."""
import time

from swarm import Put
from swarm.ledger import MessageState
from swarm.runtime import DONE, FENCED, WRITE_MARGIN
from tests.unit.test_runtime import RUN, FakeDelivery, envelope, planned, setup  # noqa: F401 - setup is a fixture
from tests.unit.test_runtime_batch import SINK
from tests.unit.toyjob import use_sink

LEASE = 30.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def handled(setup, ledger, monkeypatch, during, n=1):
    """Deliver message ``n`` to a worker on a hand-moved clock; ``during(proc, clock)`` runs in its handler."""
    clock = Clock()
    proc = setup(lease=LEASE, clock=clock)

    def handler(ctx, msg):
        during(proc, clock)
        return Put("out", f"row{n:04d}", {"f:n": n})

    use_sink(monkeypatch, handler)
    delivery = FakeDelivery(SINK, planned(ledger, envelope(n=n)))
    return proc.handle(delivery), delivery


def state(ledger):
    """The one message's state in the ledger."""
    (only,) = ledger.counts(RUN)
    return only


def test_a_handler_outliving_its_unrenewed_lease_writes_nothing_and_is_looked_at_again(
        setup, hub, ledger, tables, monkeypatch):
    def cut_off(proc, clock):
        clock.now += LEASE * (1 - WRITE_MARGIN) + 0.1  # no renewal got through meanwhile

    outcome, delivery = handled(setup, ledger, monkeypatch, cut_off)
    assert outcome == FENCED and delivery.acked == 1
    assert tables.row("out", b"row0001") == {}  # nothing written
    assert state(ledger) == MessageState.CLAIMED  # nor recorded: the lease runs out, the master re-publishes it
    # its copy comes back only once the lease can have run out
    assert [(name, due - time.monotonic() > LEASE - 5) for due, _, name, _ in hub.delayed] == [(SINK, True)]


def test_renewed_leases_keep_a_long_handler_writing(setup, ledger, tables, monkeypatch):
    def renewing(proc, clock):
        for _ in range(4):  # four leases long, renewed every half lease
            clock.now += LEASE / 2
            proc.renew_leases()
            clock.now += LEASE / 2

    outcome, _ = handled(setup, ledger, monkeypatch, renewing)
    assert outcome == DONE
    assert tables.row("out", b"row0001") == {b"f:n": b"1"}
    assert state(ledger) == MessageState.DONE


def test_a_lease_the_ledger_has_taken_back_writes_nothing_at_once(setup, ledger, tables, monkeypatch):
    def taken_over(proc, clock):
        # The master found the lease expired (by the ledger's clock) and re-queued the message with a new token
        assert [m.id for m in ledger.reclaim_expired(RUN, 1e12)] == [envelope(n=1).id]
        proc.renew_leases()  # no time has passed here: the renewal's answer alone says the lease is lost

    outcome, _ = handled(setup, ledger, monkeypatch, taken_over)
    assert outcome == FENCED
    assert tables.row("out", b"row0001") == {}
    assert state(ledger) == MessageState.QUEUED  # the master's to publish again
