"""Dead letters: moved into the ledger without loss, and replayed without changing the ledger on a failure."""
import pytest

from swarm import dlq
from swarm.errors import BackendError, ConfigError
from swarm.ledger import M_DEAD, M_QUEUED, RUNNING
from swarm.limits import MAX_DEAD_LETTER_BYTES
from tests.unit.test_runtime import RUN, dead_letters, deliver, envelope, planned, setup  # noqa: F401
from tests.unit.toyjob import job

SINK = "swarm.toy.sink"


@pytest.fixture
def dead_run(setup, ledger):
    """A run failed by one dead message on the sink, its letter collected into the ledger."""
    proc = setup({"1": "crash"})
    body = planned(ledger, envelope(n=1))
    for _ in range(3):
        deliver(proc, body=body)
    ledger.update_run(RUN, status="failed", error="1 dead", finished=True)
    return body


def test_collect_stores_every_letter_and_a_failing_store_loses_none(broker, ledger, dead_run, monkeypatch):
    broker.dead_letter(SINK, b"", "empty, behind the first")
    original = ledger.add_dead_letter
    monkeypatch.setattr(ledger, "add_dead_letter", lambda *a, **k: (_ for _ in ()).throw(BackendError("down")))
    with pytest.raises(BackendError):
        dlq.collect(broker, ledger, job)
    monkeypatch.setattr(ledger, "add_dead_letter", original)
    assert dlq.collect(broker, ledger, job) == 2
    assert [(d.message_id, d.body) for d in ledger.dead_letters()][1] == (None, b"")


def test_replay_publishes_before_it_changes_the_ledger(broker, ledger, dead_run, monkeypatch):
    dlq.collect(broker, ledger, job)
    [letter] = ledger.dead_letters()
    monkeypatch.setattr(broker, "outlives_process", True)  # as a shared broker: replay publishes

    def down(*args, **kwargs):
        raise BackendError("broker down")

    original_publish = broker.publish
    monkeypatch.setattr(broker, "publish", down)
    with pytest.raises(BackendError):
        dlq.replay(broker, ledger, [letter.id])
    assert ledger.counts(RUN) == {M_DEAD: 1} and ledger.get_run(RUN).status == "failed"  # nothing changed
    assert [d.id for d in ledger.dead_letters()] == [letter.id]
    monkeypatch.setattr(broker, "publish", original_publish)
    waiting = broker.depth(SINK)  # the failed attempts' retries
    assert dlq.replay(broker, ledger, [letter.id]) == 1
    assert ledger.counts(RUN) == {M_QUEUED: 1} and ledger.get_run(RUN).status == RUNNING
    assert ledger.dead_letters() == []
    assert broker.depth(SINK) == waiting + 1  # on its delay queue


def test_on_the_in_process_broker_replay_queues_in_the_ledger_for_the_next_run(broker, ledger, dead_run):
    dlq.collect(broker, ledger, job)
    [letter] = ledger.dead_letters()
    waiting = broker.depth(SINK)
    assert dlq.replay(broker, ledger, [letter.id]) == 1
    assert ledger.counts(RUN) == {M_QUEUED: 1} and broker.depth(SINK) == waiting


def test_a_letter_stored_cut_is_listed_but_not_replayed(broker, ledger):
    broker.declare([SINK])
    broker.dead_letter(SINK, b"z" * (MAX_DEAD_LETTER_BYTES + 5), "too large")
    assert dlq.collect(broker, ledger, job) == 1
    [letter] = ledger.dead_letters()
    assert letter.truncated and letter.size == MAX_DEAD_LETTER_BYTES + 5
    with pytest.raises(ConfigError, match="cannot be replayed"):
        dlq.replay(broker, ledger, [letter.id])
