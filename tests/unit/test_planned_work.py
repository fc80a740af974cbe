"""Only planned work runs: forged, stale and late messages are rejected and change nothing."""
import msgpack
import pytest

from swarm.broker import stage_queue
from swarm.envelope import encode
from swarm.errors import BackendError
from swarm.ledger import MessageState, RunStatus
from swarm.runtime import DONE, REJECTED, REQUEUED, SKIPPED
from swarm.signing import SiteKeys
from tests.unit.test_runtime import (  # noqa: F401 - setup is a fixture
    KEYS,
    RUN,
    FakeDelivery,
    dead_letters,
    deliver,
    envelope,
    planned,
    setup,
)

SINK = stage_queue("toy", "sink")


def snapshot(ledger, tables, run=RUN):
    """Everything a message could change."""
    return ledger.counts(run), ledger.counters(run), list(tables.scan("out")), ledger.get_run(run).status


def rejected_with(broker, outcome_and_delivery, reason):
    outcome, d = outcome_and_delivery
    assert (outcome, d.acked) == (REJECTED, 1)
    [dead] = dead_letters(broker, d.queue)
    assert reason in dead.reason, dead.reason
    return dead


@pytest.fixture
def planned_one(ledger):
    """A run with one planned sink message, n=1, not yet delivered."""
    return planned(ledger, envelope(n=1))


def test_an_unplanned_id_in_a_live_run_is_rejected(setup, broker, ledger, tables, planned_one):
    before = snapshot(ledger, tables)
    forged = encode(envelope(n=7), KEYS)  # signed with the site key, yet nobody planned it
    rejected_with(broker, deliver(setup(), body=forged), "not planned: the ledger has no message")
    assert snapshot(ledger, tables) == before


def test_a_message_of_an_unknown_run_is_rejected(setup, broker, ledger, tables, planned_one):
    before = snapshot(ledger, tables)
    forged = encode(envelope(run="toy@date=2026-10-17"), KEYS)
    rejected_with(broker, deliver(setup(), body=forged), "not planned")
    assert snapshot(ledger, tables) == before
    assert ledger.get_run("toy@date=2026-10-17") is None


def test_another_body_under_a_planned_id_is_rejected_as_stale(setup, broker, ledger, tables, planned_one):
    before = snapshot(ledger, tables)
    stale = encode(envelope(n=1, payload={"n": 100}), KEYS)  # same id, other contents: an earlier plan's copy
    rejected_with(broker, deliver(setup(), body=stale), "differs from the one the ledger recorded")
    assert snapshot(ledger, tables) == before
    assert deliver(setup(), body=planned_one)[0] == DONE  # the planned one still runs


@pytest.mark.parametrize("make_body, reason", [
    (lambda body: msgpack.packb({"v": 1, "job": "toy", "run": RUN, "phase": "main", "stage": "sink", "chunk": "n1",
                                 "seq": "0", "attempt": 1, "payload": {"n": 1}}), "unsigned"),
    (lambda body: encode(envelope(n=1), SiteKeys(b"f" * 32)), "neither the current nor the previous site key"),
    (lambda body: _resigned(body, b"\0" * 32), "bad signature"),
])
def test_unsigned_and_badly_signed_copies_of_a_planned_message_change_nothing(
        setup, broker, ledger, tables, planned_one, make_body, reason):
    before = snapshot(ledger, tables)
    rejected_with(broker, deliver(setup(), body=make_body(planned_one)), reason)
    assert snapshot(ledger, tables) == before  # the planned message is not marked dead either
    assert ledger.counts(RUN) == {MessageState.PLANNED: 1}


def _resigned(body: bytes, sig: bytes) -> bytes:
    doc = msgpack.unpackb(body, raw=False)
    doc["sig"] = sig
    return msgpack.packb(doc, use_bin_type=True)


def test_a_late_copy_for_a_finished_run_changes_nothing(setup, broker, ledger, tables, planned_one):
    assert deliver(setup(), body=planned_one)[0] == DONE
    ledger.update_run(RUN, status="done", finished=True)
    before = snapshot(ledger, tables)
    outcome, d = deliver(setup(), body=planned_one)
    assert (outcome, d.acked) == (SKIPPED, 1)  # a duplicate of done work: acked, nothing else
    rejected_with(broker, deliver(setup(), body=encode(envelope(n=2), KEYS)), "not planned")
    assert snapshot(ledger, tables) == before


def test_work_left_in_a_run_that_is_not_running_is_rejected(setup, broker, ledger, tables, planned_one):
    ledger.update_run(RUN, status=RunStatus.FAILED, error="cancelled", finished=True)
    before = snapshot(ledger, tables)
    rejected_with(broker, deliver(setup(), body=planned_one), f"run {RUN} is failed")
    assert snapshot(ledger, tables) == before


def test_children_are_in_the_ledger_before_they_are_published(setup, broker, ledger, monkeypatch):
    seen = []
    original = broker.publish

    def publish(messages, delay=0.0):
        seen.append(ledger.counts(RUN))
        return original(messages, delay)

    monkeypatch.setattr(broker, "publish", publish)
    assert deliver(setup(), envelope(stage="double", n=3))[0] == DONE
    # parent done and child recorded when the child is published
    assert seen == [{MessageState.DONE: 1, MessageState.QUEUED: 1}]


def test_a_child_published_by_a_parent_is_granted(setup, broker, ledger):
    deliver(setup(), envelope(stage="double", n=3))
    child = broker.hub.queues[SINK].popleft()[0]
    assert setup().handle(FakeDelivery(SINK, child)) == DONE
    assert ledger.counters(RUN)["total"] == 6


def test_a_parent_whose_children_were_not_published_publishes_them_when_it_comes_back(setup, broker, ledger,
                                                                                      monkeypatch):
    proc = setup()
    body = planned(ledger, envelope(stage="double", n=3))
    original = broker.publish

    def fails_for_children(messages, delay=0.0):
        if delay == 0 and messages[0][0] == SINK:
            raise BackendError("broker down")
        return original(messages, delay)

    monkeypatch.setattr(broker, "publish", fails_for_children)
    outcome, d = deliver(proc, body=body, queue=stage_queue("toy", "double"))
    assert (outcome, d.acked) == (REQUEUED, 1)  # a delayed copy of the parent waits the outage out
    assert ledger.counts(RUN) == {MessageState.DONE: 1, MessageState.QUEUED: 1}  # done, with its child recorded
    assert broker.depth(SINK) == 0
    monkeypatch.undo()
    outcome, d = deliver(proc, body=body, queue=stage_queue("toy", "double"))  # the copy comes back
    assert (outcome, d.acked) == (SKIPPED, 1)
    assert broker.depth(SINK) == 1  # and publishes the child it had recorded
    child = broker.hub.queues[SINK].popleft()[0]
    assert proc.handle(FakeDelivery(SINK, child)) == DONE


def test_a_fenced_parent_publishes_no_children(setup, broker, ledger, monkeypatch):
    from swarm.errors import Fenced
    from swarm.runtime import FENCED

    monkeypatch.setattr(ledger, "complete_batch", lambda calls: [Fenced("taken over") for _ in calls])
    assert deliver(setup(), envelope(stage="double", n=3))[0] == FENCED
    assert broker.depth(SINK) == 0


def test_a_huge_bad_field_gives_one_clear_short_reason(setup, broker):
    doc = {"job": "toy", "run": RUN, "phase": "main", "stage": "sink", "chunk": "n1", "seq": "0",
           "payload": {"n": 1}, "extra": "x" * 900_000}
    data = msgpack.packb(doc, use_bin_type=True)
    kid, sig = KEYS.sign(data)
    body = msgpack.packb({"v": 2, "kid": kid, "sig": sig, "env": data}, use_bin_type=True)
    dead = rejected_with(broker, deliver(setup(), body=body), "unknown field(s)")
    assert len(dead.reason) < 300


def test_every_reason_is_clipped_and_a_huge_body_is_dead_lettered_cut(broker):
    from swarm.broker import SHA256_HEADER, SIZE_HEADER
    from swarm.limits import MAX_DEAD_LETTER_BYTES, MAX_REASON_CHARS

    broker.declare([SINK])
    broker.dead_letter(SINK, b"b" * (MAX_DEAD_LETTER_BYTES + 10), "r" * 50_000)
    [dead] = dead_letters(broker, SINK)
    assert len(dead.reason) <= MAX_REASON_CHARS
    assert (len(dead.body), dead.size) == (MAX_DEAD_LETTER_BYTES, MAX_DEAD_LETTER_BYTES + 10)
    assert len(dead.sha256) == 64 and SIZE_HEADER and SHA256_HEADER
