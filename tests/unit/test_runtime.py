"""The worker's processing of one message: outcomes, failures and bad input."""
import threading
import time

import msgpack
import pytest

from swarm import Count, Send
from swarm.broker import Delivery, dead_letter_queue, stage_queue
from swarm.envelope import Envelope, encode
from swarm.ledger import Message, MessageState
from swarm.runtime import ABORTED, DEAD, DONE, FENCED, REJECTED, RETRY, SKIPPED, TIMED_OUT, Processor
from swarm.signing import SiteKeys
from swarm.testing import call
from tests.unit import toyjob
from tests.unit.toyjob import job, use_sink

RUN = "toy@date=2026-11-22"
KEYS = SiteKeys(b"t" * 32)


class FakeDelivery(Delivery):
    def __init__(self, queue, body):
        self.queue, self.body, self.headers, self.redelivered = queue, body, {}, False
        self.acked = self.requeued = 0

    def ack(self):
        self.acked += 1

    def requeue(self):
        self.requeued += 1


def envelope(stage="sink", n=1, **kw):
    base = dict(job="toy", run=RUN, phase="main", stage=stage, chunk=f"n{n}", seq="0", attempt=1, payload={"n": n})
    return Envelope(**{**base, **kw})


@pytest.fixture
def setup(broker, ledger, tables):
    tables.create_table("out", ["f"])
    broker.declare(stage_queue("toy", s) for s in job.stages)
    ledger.open_run(RUN, "toy", {"date": "2026-11-22"})

    def make(behaviour=None, lease=30, **kw):
        return Processor(job, broker, ledger, tables, "w1", lease=lease, options={"behaviour": behaviour or {}},
                         backend_pause=0.01, keys=KEYS, **kw)

    return make


def planned(ledger, env) -> bytes:
    """``env`` signed and checkpointed in the ledger's plan, as the master does; returns its body."""
    body = encode(env, KEYS)
    ledger.save_plan(env.run, env.phase, [Message(env.id, env.stage, env.chunk, body)])
    return body


def deliver(proc, env=None, body=None, queue=None):
    """Deliver ``env``, planned first, or a raw ``body`` as it is."""
    env = env or envelope()
    if body is None:
        body = planned(proc.ledger, env)
    d = FakeDelivery(queue or stage_queue("toy", env.stage), body)
    return proc.handle(d), d


def dead_letters(broker, queue):
    """Everything on ``queue``'s dead-letter queue, taken off it."""
    letters = []
    broker.take_dead(queue, letters.append)
    return letters


def test_a_handler_in_one_line():
    assert call(toyjob.double, {"n": 2}) == [Send("sink", {"n": 4}), Count("doubled")]


def test_done_applies_effects_then_acks(setup, ledger, tables):
    outcome, d = deliver(setup())
    assert (outcome, d.acked) == (DONE, 1)
    assert tables.row("out", b"row0001") == {b"f:n": b"1"}
    assert ledger.counters(RUN) == {"sunk": 1, "total": 1}


def test_children_are_published_and_recorded(setup, broker, ledger):
    outcome, _ = deliver(setup(), envelope(stage="double", n=3))
    assert outcome == DONE
    assert broker.depth(stage_queue("toy", "sink")) == 1
    assert ledger.counts(RUN) == {"done": 1, "queued": 1}


def test_duplicate_is_skipped_and_counted_once(setup, ledger):
    proc = setup()
    assert deliver(proc)[0] == DONE
    outcome, d = deliver(proc)
    assert (outcome, d.acked) == (SKIPPED, 1)
    assert ledger.counters(RUN) == {"sunk": 1, "total": 1}


def test_fault_is_retried_through_the_broker_not_held(setup, broker, ledger, hub):
    outcome, d = deliver(setup({"1": "flaky"}))
    assert (outcome, d.acked) == (RETRY, 1)
    assert broker.depth(stage_queue("toy", "sink")) == 1  # a delayed copy
    time.sleep(0.05)
    with hub.cond:
        hub.promote_due(time.monotonic())
        body, _, _ = hub.queues[stage_queue("toy", "sink")].popleft()
    assert body == d.body  # unchanged: the ledger counts the attempts
    outcome, _ = deliver(setup({"1": "flaky"}), body=body)
    assert outcome == DONE
    assert ledger.counts(RUN) == {MessageState.DONE: 1}


def test_the_handler_sees_the_ledgers_attempt_count_not_the_envelopes(setup, ledger):
    """A copy re-published after a lost lease still says attempt 1; the handler must not see a first try again."""
    proc = setup({"1": "flaky"})
    assert deliver(proc)[0] == RETRY
    outcome, _ = deliver(proc, envelope(attempt=1))  # the original body, as the master re-publishes it
    assert outcome == DONE
    assert ledger.counts(RUN) == {MessageState.DONE: 1}


def test_unexpected_exception_is_a_fault_with_traceback_then_dead(setup, broker, ledger):
    proc = setup({"1": "crash"})
    outcomes = [deliver(proc, envelope(attempt=a))[0] for a in (1, 2, 3)]
    assert outcomes == [RETRY, RETRY, DEAD]
    [dead] = dead_letters(broker, stage_queue("toy", "sink"))
    assert "failed 3 times" in dead.reason and "ValueError: boom on 1" in dead.reason
    assert "Traceback" in dead.reason
    [failure] = ledger.failures(RUN)
    assert failure.state == MessageState.DEAD and "ValueError" in failure.error


def test_abort_marks_the_message_aborted(setup, ledger):
    outcome, d = deliver(setup({"1": "abort"}))
    assert (outcome, d.acked) == (ABORTED, 1)
    [failure] = ledger.failures(RUN)
    assert failure.state == MessageState.ABORTED and "1 is not allowed" in failure.error


def test_send_to_an_undeclared_stage_aborts_before_applying(setup, ledger, broker):
    outcome, _ = deliver(setup({"1": "stray"}))
    assert outcome == ABORTED
    assert "nowhere" in ledger.failures(RUN)[0].error


@pytest.mark.parametrize("make_body, queue, reason", [
    (lambda: b"\xc1garbage", None, "not valid msgpack"),
    (lambda: msgpack.packb({"v": 9}), None, "schema version 9"),
    (lambda: encode(envelope(job="other"), KEYS), None, "job 'other'"),
    (lambda: encode(envelope(stage="ghost"), KEYS), "swarm.toy.sink", "unknown stage 'ghost'"),
    (lambda: encode(envelope(stage="double"), KEYS), "swarm.toy.sink", "arrived on queue"),
    (lambda: encode(envelope(stage="double", payload={"n": "x"}), KEYS), "swarm.toy.double", "validation: payload"),
    (lambda: b"\x00" * 2_000_000, None, "over the"),
])
def test_bad_input_is_dead_lettered_with_its_reason(setup, broker, make_body, queue, reason):
    proc = setup()
    outcome, d = deliver(proc, body=make_body(), queue=queue or "swarm.toy.sink")
    assert (outcome, d.acked) == (REJECTED, 1)
    [dead] = dead_letters(broker, queue or "swarm.toy.sink")
    assert reason in dead.reason
    assert deliver(proc)[0] == DONE  # and the next good message is served


def test_rejected_message_the_ledger_expects_ends_dead_for_the_master(setup, ledger):
    bad = envelope(stage="double", payload={"n": "x"})
    deliver(setup(), body=planned(ledger, bad), queue="swarm.toy.double")
    [failure] = ledger.failures(RUN)
    assert failure.state == MessageState.DEAD and "rejected: payload fails stage 'double' validation" in failure.error


def test_a_stray_message_does_not_change_any_run(setup, ledger):
    deliver(setup(), body=encode(envelope(stage="double", payload={"n": "x"}), KEYS), queue="swarm.toy.double")
    assert ledger.counts(RUN) == {}


def test_stale_holder_is_fenced(setup, ledger, monkeypatch):
    proc = setup()
    env = envelope()
    release = threading.Event()
    entered = threading.Event()

    def slow_sink(ctx, msg):
        entered.set()
        release.wait(5)
        return [Count("sunk")]

    use_sink(monkeypatch, slow_sink)
    result = {}
    t = threading.Thread(target=lambda: result.update(outcome=deliver(proc, env)[0]))
    t.start()
    entered.wait(5)
    assert ledger.reclaim_expired(RUN, ledger.now() + 3600)  # the lease "expired": the master takes it back
    release.set()
    t.join(5)
    assert result["outcome"] == FENCED
    assert ledger.counters(RUN) == {}


def test_overdue_handler_is_timed_out_and_its_late_result_dropped(setup, broker, ledger, monkeypatch):
    proc = setup()
    release, entered = threading.Event(), threading.Event()

    def stuck(ctx, msg):
        entered.set()
        release.wait(5)
        return [Count("sunk")]

    use_sink(monkeypatch, stuck, timeout=0.01)
    result = {}
    t = threading.Thread(target=lambda: result.update(outcome=deliver(proc)[0]))
    t.start()
    entered.wait(5)
    assert proc.expire_overdue(time.monotonic() + 1) == [envelope().id]
    release.set()
    t.join(5)
    assert result["outcome"] == TIMED_OUT
    assert "timed out" in ledger.failures(RUN)[0].error
    assert broker.depth(stage_queue("toy", "sink")) == 1  # the retry
    assert ledger.counters(RUN) == {}


def test_dead_letter_queue_name():
    assert dead_letter_queue("swarm.toy.sink") == "swarm.toy.sink.dlq"


def test_a_backend_outage_sends_the_message_round_a_delay_queue_not_back_to_the_head(setup, broker, ledger,
                                                                                      monkeypatch):
    from swarm.errors import BackendError
    from swarm.runtime import REQUEUED

    proc = setup()

    def down(*a, **k):
        raise BackendError("ledger down")

    monkeypatch.setattr(ledger, "claim_batch", down)
    outcome, d = deliver(proc)
    assert (outcome, d.acked, d.requeued) == (REQUEUED, 1, 0)  # no delivery counted against it
    assert broker.depth(stage_queue("toy", "sink")) == 1  # a delayed copy waits the outage out
    monkeypatch.undo()
    assert ledger.counts(RUN) == {"planned": 1}  # untouched


def test_a_message_whose_workers_keep_dying_is_dead_lettered(setup, broker, ledger):
    env = envelope()
    msg = Message(env.id, env.stage, env.chunk, planned(ledger, env))
    for _ in range(job.stages["sink"].retry.max_attempts):  # each claim's worker "died" holding it
        assert ledger.claim(RUN, "main", msg, "doomed", 30).granted
        ledger.reclaim_expired(RUN, ledger.now() + 3600)
    outcome, d = deliver(setup(), body=msg.body)
    assert (outcome, d.acked) == (DEAD, 1)
    [dead] = dead_letters(broker, stage_queue("toy", "sink"))
    assert "no outcome after 3 deliveries" in dead.reason
