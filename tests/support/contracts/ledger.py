"""The behaviour every ledger shares, run against each implementation.

A test module subclasses ``LedgerContract`` and provides a ``url`` fixture:
the URL of an empty, initialised ledger that ``swarm.backends.open_ledger``
opens. ``ledger`` is one ledger on it; ``reopen()`` opens another on the same
data, as a second process would.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from swarm.backends import open_ledger
from swarm.errors import BackendError, Fenced, MasterLocked, PublishRefused
from swarm.ledger import (
    EVERY_STAGE,
    FLEET,
    CheckResult,
    ClaimRequest,
    Completion,
    ControlState,
    Failure,
    Ledger,
    Message,
    MessageState,
    PhaseState,
    PublishState,
    Refusal,
    RunStatus,
)
from swarm.ledgers import schema
from swarm.ledgers.group import Pending
from swarm.limits import MAX_DEAD_LETTER_BYTES, MAX_ERROR_CHARS

RUN = "nightly@date=2024-05-01"
PHASE = "map"
LEASE = 300.0
EXPIRED = -1.0  # a lease that is over as soon as it is granted
T0 = 1_714_521_600.0
DAY = 86_400.0
MIB = 1 << 20


def message(seq: int | str, stage: str = "read", chunk: str = "c0", phase: str = PHASE, run: str = RUN,
            body: bytes | None = None) -> Message:
    mid = f"{run}/{phase}/{chunk}/{stage}/{seq}"
    return Message(mid, stage, chunk, f"body of {mid}".encode() if body is None else body)


def known(ledger: Ledger, *msgs: Message, run: str = RUN, phase: str = PHASE) -> Message:
    """Check ``msgs`` into the plan of a running run, as the master does: the only way a claim is granted.

    Returns the first, for tests of one message.
    """
    ledger.open_run(run, run.split("@", 1)[0], {})
    ledger.save_plan(run, phase, list(msgs))
    return msgs[0] if msgs else None


class Clock:
    """Stands in for ``Ledger.now`` so that tests choose the time."""

    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def retry_while_locked(action: Callable[[], None], within: float = 10.0) -> None:
    """Call ``action`` until no ``MasterLocked`` stops it: a dead session ends on the server a moment later."""
    deadline = time.monotonic() + within
    while True:
        try:
            return action()
        except MasterLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# A master that takes the lock, says so, and waits to be killed.
DOOMED_MASTER = """
import sys, time
from swarm.backends import open_ledger
ledger = open_ledger(sys.argv[1])
ledger.lock_master(sys.argv[2], "doomed master")
print("locked", flush=True)
time.sleep(600)
"""


def together(run: Callable[[list[Pending]], None], key, calls: list[tuple[str, object]]) -> list[Pending]:
    """Run ``calls`` (message id, request) as one group commit, as concurrent callers would share it."""
    group = [Pending(key, msg_id, request) for msg_id, request in calls]
    run(group)
    return group


def outcome(pending: Pending):
    """A member's result, or the class of the exception it gets."""
    return type(pending.error) if pending.error is not None else pending.result


class LedgerContract:
    @pytest.fixture
    def reopen(self, url: str):
        opened: list[Ledger] = []

        def open_() -> Ledger:
            opened.append(open_ledger(url))
            return opened[-1]

        yield open_
        for ledger in opened:
            ledger.close()

    @pytest.fixture
    def ledger(self, reopen) -> Ledger:
        return reopen()

    @pytest.fixture
    def clock(self, ledger, monkeypatch) -> Clock:
        clock = Clock(T0)
        monkeypatch.setattr(ledger, "now", clock)
        return clock

    # schema ---------------------------------------------------------------------------

    def test_schema_is_current_and_init_is_idempotent(self, ledger):
        assert ledger.schema_version() == schema.SCHEMA_VERSION
        ledger.init_schema()
        assert ledger.migrate() == []
        assert ledger.schema_version() == schema.SCHEMA_VERSION

    def test_migrate_applies_a_new_numbered_step_once(self, ledger, monkeypatch):
        def add_notes(led, cur):
            cur.execute(led._ddl(
                "CREATE TABLE IF NOT EXISTS swarm_test_notes (id {key} PRIMARY KEY, note {text}){table_options}"
            ))

        monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS + (add_notes,))
        assert ledger.migrate() == [schema.SCHEMA_VERSION + 1]
        assert ledger.migrate() == []
        assert ledger.schema_version() == schema.SCHEMA_VERSION + 1
        ledger._write("INSERT INTO swarm_test_notes (id, note) VALUES (?, ?)", ("n1", "hello"))
        assert ledger._rows("SELECT id, note FROM swarm_test_notes") == [("n1", "hello")]

    def test_a_schema_newer_than_the_code_is_refused(self, ledger):
        ledger._write("UPDATE swarm_schema SET version = ?", (schema.SCHEMA_VERSION + 1,))
        with pytest.raises(BackendError, match="newer"):
            ledger.migrate()

    # runs -------------------------------------------------------------------------------

    def test_open_run_is_idempotent(self, ledger):
        first = ledger.open_run(RUN, "nightly", {"date": "2024-05-01"})
        assert (first.id, first.job, dict(first.params)) == (RUN, "nightly", {"date": "2024-05-01"})
        assert (first.status, first.phase, first.error, first.finished_at) == (RunStatus.RUNNING, None, None, None)
        assert ledger.open_run(RUN, "nightly", {"date": "changed"}) == first
        assert ledger.get_run(RUN) == first
        assert ledger.get_run("no-such-run") is None
        assert [r.id for r in ledger.runs()] == [RUN]

    def test_update_run_and_reopen_after_failure(self, ledger):
        ledger.open_run(RUN, "nightly", {})
        ledger.update_run(RUN, status=RunStatus.FAILED, phase="reduce", error="boom", finished=True)
        run = ledger.get_run(RUN)
        assert (run.status, run.phase, run.error) == (RunStatus.FAILED, "reduce", "boom")
        assert run.finished_at is not None
        ledger.update_run(RUN, status=RunStatus.RUNNING)
        run = ledger.get_run(RUN)
        assert (run.status, run.phase, run.error, run.finished_at) == (RunStatus.RUNNING, "reduce", None, None)

    def test_phase_state(self, ledger):
        assert ledger.phase_state(RUN, "map") is None
        ledger.set_phase_state(RUN, "map", PhaseState.PUBLISHED)
        ledger.set_phase_state(RUN, "map", PhaseState.DONE)
        ledger.set_phase_state(RUN, "reduce", PhaseState.PUBLISHED)
        assert ledger.phase_state(RUN, "map") == PhaseState.DONE
        assert ledger.phase_state(RUN, "reduce") == PhaseState.PUBLISHED
        assert ledger.phase_state("other-run", "map") is None

    def test_runs_filter_by_job_status_date_and_text(self, ledger, clock):
        history = [("a", RunStatus.DONE, None), ("a", RunStatus.FAILED, "Timeout talking to HBase"),
                   ("b", RunStatus.FAILED, "bad row 50%_x"),
                   ("b", RunStatus.RUNNING, None)]
        for day, (job, status, error) in enumerate(history):
            clock.t = T0 + day * DAY
            ledger.open_run(f"{job}@day={day}", job, {"day": str(day)})
            ledger.update_run(f"{job}@day={day}", status=status, error=error)

        def ids(**filters) -> list[str]:
            return [r.id for r in ledger.runs(**filters)]

        assert ids() == ["b@day=3", "b@day=2", "a@day=1", "a@day=0"]  # newest first
        assert ids(job="a") == ["a@day=1", "a@day=0"]
        assert ids(status=RunStatus.FAILED) == ["b@day=2", "a@day=1"]
        assert ids(job="b", status=RunStatus.FAILED) == ["b@day=2"]
        assert ids(since=T0 + DAY, until=T0 + 3 * DAY) == ["b@day=2", "a@day=1"]
        assert ids(since=T0 + 3 * DAY) == ["b@day=3"]
        assert ids(text="timeout") == ["a@day=1"]  # any case
        assert ids(text="50%_x") == ["b@day=2"]
        assert ids(text="5%x") == []  # % and _ are themselves, not wildcards
        assert ids(text="0__") == []
        assert ids(limit=1) == ["b@day=3"]
        assert ledger.jobs() == ["a", "b"]

    # the plan -------------------------------------------------------------------------

    def test_save_plan_records_planned_messages_and_the_phase(self, ledger):
        msgs = [message(i) for i in range(5)]
        ledger.save_plan(RUN, PHASE, msgs)
        assert ledger.phase_state(RUN, PHASE) == PhaseState.PLANNED
        assert ledger.planned(RUN, PHASE, 10) == msgs
        assert ledger.planned(RUN, PHASE, 2) == msgs[:2]
        assert ledger.planned(RUN, PHASE, 2, after=msgs[1].id) == msgs[2:4]  # the next batch, in id order
        assert ledger.planned(RUN, "reduce", 10) == []
        ledger.save_plan(RUN, PHASE, msgs)  # again, as a restarted master does: nothing doubles
        assert ledger.counts(RUN, PHASE) == {MessageState.PLANNED: 5}

    def test_save_plan_is_atomic(self, ledger):
        unstorable = Message(message(9).id, "read", "c0", None)  # a body is required
        with pytest.raises(BackendError):
            ledger.save_plan(RUN, PHASE, [message(i) for i in range(3)] + [unstorable])
        assert ledger.planned(RUN, PHASE, 10) == []
        assert ledger.phase_state(RUN, PHASE) is None

    def test_mark_queued_moves_only_planned_messages(self, ledger):
        msgs = [message(i) for i in range(4)]
        known(ledger, *msgs)
        ledger.mark_queued([msgs[0].id, msgs[1].id])
        assert ledger.planned(RUN, PHASE, 10) == msgs[2:]
        assert ledger.claim(RUN, PHASE, msgs[2], "w1", LEASE).granted
        ledger.mark_queued([msgs[0].id, msgs[2].id])
        assert ledger.counts(RUN, PHASE) == {MessageState.QUEUED: 2, MessageState.CLAIMED: 1, MessageState.PLANNED: 1}

    # claims ---------------------------------------------------------------------------

    def test_claim_grants_a_token_and_counts_the_attempt(self, ledger):
        planned = known(ledger, message(1))
        claim = ledger.claim(RUN, PHASE, planned, "w1", LEASE)
        assert claim.granted and claim.token >= 1 and claim.attempts == 1 and claim.state is None
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: 1}

    def test_a_message_the_ledger_does_not_know_is_refused_and_not_recorded(self, ledger):
        known(ledger, message(1))
        for unseen in (message(2), message(1, run="other@date=2024-05-01")):
            refused = ledger.claim(unseen.id.split("/")[0], PHASE, unseen, "w1", LEASE)
            assert (refused.granted, refused.state) == (False, Refusal.UNPLANNED)
        assert ledger.counts(RUN) == {MessageState.PLANNED: 1}
        assert ledger.counts("other@date=2024-05-01") == {}

    def test_another_body_under_a_known_id_is_refused(self, ledger):
        m = known(ledger, message(1))
        refused = ledger.claim(RUN, PHASE, Message(m.id, m.stage, m.chunk, b"a stale copy"), "w1", LEASE)
        assert (refused.granted, refused.state) == (False, Refusal.MISMATCH)
        assert ledger.counts(RUN) == {MessageState.PLANNED: 1}
        assert ledger.claim(RUN, PHASE, m, "w1", LEASE).granted

    @pytest.mark.parametrize("status", [RunStatus.DONE, RunStatus.FAILED, None])
    def test_work_of_a_run_that_is_not_running_is_refused(self, ledger, status):
        m = known(ledger, message(1))
        if status is None:
            ledger._write("DELETE FROM swarm_runs WHERE id = ?", (RUN,))
        else:
            ledger.update_run(RUN, status=status, finished=True)
        refused = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        assert (refused.granted, refused.state, refused.detail) == (
            False, Refusal.RUN_ENDED, status or "not in the ledger")
        assert ledger.counts(RUN) == {MessageState.PLANNED: 1}
        ledger.open_run(RUN, "nightly", {})
        ledger.update_run(RUN, status=RunStatus.RUNNING)
        assert ledger.claim(RUN, PHASE, m, "w1", LEASE).granted

    def test_a_second_claim_is_refused_while_the_lease_is_live(self, ledger):
        m = known(ledger, message(1))
        assert ledger.claim(RUN, PHASE, m, "w1", LEASE).granted
        for holder in ("w2", "w1"):
            refused = ledger.claim(RUN, PHASE, m, holder, LEASE)
            assert (refused.granted, refused.state, refused.attempts) == (False, MessageState.CLAIMED, 1)

    def test_a_claim_after_the_lease_expired_gets_a_higher_token(self, ledger):
        m = known(ledger, message(1))
        first = ledger.claim(RUN, PHASE, m, "w1", EXPIRED)
        second = ledger.claim(RUN, PHASE, m, "w2", LEASE)
        assert second.granted and second.token > first.token and second.attempts == 2

    def test_finished_messages_are_not_claimed(self, ledger):
        ends = {
            MessageState.DONE: lambda m, t: ledger.complete(m.id, t, RUN, PHASE, [], {}),
            MessageState.DEAD: lambda m, t: ledger.release(m.id, t, MessageState.DEAD, "too many faults"),
            MessageState.ABORTED: lambda m, t: ledger.release(m.id, t, MessageState.ABORTED, "abort: bad input"),
        }
        for seq, (state, end) in enumerate(ends.items()):
            m = known(ledger, message(seq))
            end(m, ledger.claim(RUN, PHASE, m, "w1", LEASE).token)
            refused = ledger.claim(RUN, PHASE, m, "w2", LEASE)
            assert (refused.granted, refused.state, refused.attempts) == (False, state, 1)

    def test_renew_extends_current_leases_only(self, ledger):
        kept, lost = message(1), message(2)
        known(ledger, kept, lost)
        kept_claim = ledger.claim(RUN, PHASE, kept, "w1", EXPIRED)
        lost_claim = ledger.claim(RUN, PHASE, lost, "w1", EXPIRED)
        assert ledger.renew([(kept.id, kept_claim.token), (lost.id, lost_claim.token + 1)], LEASE) == {kept.id}
        assert ledger.renew([], LEASE) == set()
        assert not ledger.claim(RUN, PHASE, kept, "w2", LEASE).granted
        assert ledger.claim(RUN, PHASE, lost, "w2", LEASE).granted

    def test_concurrent_claims_of_one_message_grant_exactly_one(self, ledger):
        workers, rounds = 12, 8
        barrier = threading.Barrier(workers)

        def contend(m: Message, holder: str):
            barrier.wait()
            return ledger.claim(RUN, PHASE, m, holder, LEASE)

        known(ledger, *[message(f"planned{r}") for r in range(rounds)])
        ledger.mark_queued([message(f"planned{r}").id for r in range(0, rounds, 2)])
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for r in range(rounds):
                m = message(f"planned{r}")  # half planned, half queued
                claims = list(pool.map(contend, [m] * workers, [f"w{i}" for i in range(workers)]))
                assert sum(c.granted for c in claims) == 1
                assert all(c.state == MessageState.CLAIMED and c.attempts == 1 for c in claims if not c.granted)
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: rounds}

    def test_claims_in_one_group_get_the_outcome_each_would_get_alone(self, ledger):
        planned, unseen, done, live, expired = (message(i) for i in range(5))
        known(ledger, planned, done, live, expired)
        ledger.complete(done.id, ledger.claim(RUN, PHASE, done, "w1", LEASE).token, RUN, PHASE, [], {})
        held = ledger.claim(RUN, PHASE, live, "w2", LEASE)
        lapsed = ledger.claim(RUN, PHASE, expired, "w2", EXPIRED)
        group = together(ledger._claim_group, ("w1", LEASE), [
            (m.id, ClaimRequest(RUN, PHASE, m)) for m in (planned, unseen, done, live, expired)])
        claims = [outcome(p) for p in group]
        assert [c.granted for c in claims] == [True, False, False, False, True]
        assert [(c.state, c.attempts) for c in claims] == [
            (None, 1), (Refusal.UNPLANNED, 0), (MessageState.DONE, 1), (MessageState.CLAIMED, 1), (None, 2)]
        assert claims[4].token > lapsed.token
        with pytest.raises(Fenced):
            ledger.complete(live.id, held.token + 1, RUN, PHASE, [], {})
        ledger.complete(planned.id, claims[0].token, RUN, PHASE, [], {})
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: 2, MessageState.DONE: 2}

    def test_a_batch_claim_gives_each_message_the_outcome_it_would_get_alone(self, ledger):
        planned, twice, done, live, unseen = (message(i) for i in range(5))
        known(ledger, planned, twice, done, live)
        stale = Message(planned.id, planned.stage, planned.chunk, b"another body")
        ledger.complete(done.id, ledger.claim(RUN, PHASE, done, "w1", LEASE).token, RUN, PHASE, [], {})
        ledger.claim(RUN, PHASE, live, "w2", LEASE)
        # twice: the same message delivered twice in one batch is granted once
        calls = [ClaimRequest(RUN, PHASE, m) for m in (planned, twice, done, live, twice, unseen, stale)]
        claims = ledger.claim_batch(calls, "w1", LEASE)
        assert [c.granted for c in claims] == [True, True, False, False, False, False, False]
        assert [c.state for c in claims[2:]] == [
            MessageState.DONE, MessageState.CLAIMED, MessageState.CLAIMED, Refusal.UNPLANNED, Refusal.MISMATCH]
        assert ledger.claim_batch([], "w1", LEASE) == []
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: 3, MessageState.DONE: 1}

    def test_a_batch_complete_gives_each_message_the_outcome_it_would_get_alone(self, ledger):
        ok, stale, other = message(1), message(2), message(3)
        known(ledger, ok, stale, other)
        claims = ledger.claim_batch([ClaimRequest(RUN, PHASE, m) for m in (ok, stale, other)], "w1", EXPIRED)
        ledger.claim(RUN, PHASE, stale, "w2", LEASE)  # takes over the lapsed lease: w1's token is stale
        kids = [message("1.0", stage="write")]
        outcomes = ledger.complete_batch([
            Completion(ok.id, claims[0].token, RUN, PHASE, kids, {"rows": 2}),
            Completion(stale.id, claims[1].token, RUN, PHASE, [message("2.0", stage="write")], {"rows": 5}),
            Completion(other.id, claims[2].token, RUN, PHASE, [], {"rows": 1}),
        ])
        assert [type(o) for o in outcomes] == [type(None), Fenced, type(None)]
        assert ledger.counters(RUN) == {"rows": 3}
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 2, MessageState.CLAIMED: 1, MessageState.QUEUED: 1}
        assert ledger.complete_batch([]) == []

    def test_concurrent_claims_and_completes_from_many_threads(self, ledger):
        threads, per_thread = 16, 6
        msgs = [message(i) for i in range(threads * per_thread // 2)]
        children = {m.id: message(f"{i}.0", stage="write") for i, m in enumerate(msgs)}
        known(ledger, *msgs)
        ledger.mark_queued([m.id for m in msgs[::2]])  # half planned, half queued
        barrier = threading.Barrier(threads, timeout=60)

        def mine(t: int) -> list[Message]:  # every message is wanted by two threads
            return [msgs[(3 * t + k) % len(msgs)] for k in range(per_thread)]

        def work(t: int) -> dict[str, list]:
            barrier.wait()
            claims = [(m, ledger.claim(RUN, PHASE, m, "w1", LEASE)) for m in mine(t)]
            granted = [(m, c) for m, c in claims if c.granted]
            barrier.wait()
            for m, c in granted:
                ledger.complete(m.id, c.token, RUN, PHASE, [children[m.id]], {"rows": 1, "bytes": 10})
            barrier.wait()
            fenced = 0
            for m, c in granted:  # again, as after a lost answer, then with a stale token
                ledger.complete(m.id, c.token, RUN, PHASE, [], {"rows": 1000})
                try:
                    ledger.complete(m.id, c.token - 1, RUN, PHASE, [], {"rows": 1000})
                except Fenced:
                    fenced += 1
            return {"claims": claims, "granted": [m.id for m, _ in granted], "fenced": fenced}

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            results = list(pool.map(work, range(threads)))
        granted = [i for r in results for i in r["granted"]]
        assert sorted(granted) == sorted(m.id for m in msgs)  # each message exactly once
        refused = [c for r in results for _, c in r["claims"] if not c.granted]
        assert len(refused) == len(msgs) and all((c.state, c.attempts) == (MessageState.CLAIMED, 1) for c in refused)
        assert sum(r["fenced"] for r in results) == len(msgs)
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: len(msgs), MessageState.QUEUED: len(msgs)}
        assert ledger.counters(RUN) == {"rows": len(msgs), "bytes": 10 * len(msgs)}

    def test_a_child_is_granted_once_its_parent_has_recorded_it(self, ledger):
        parent, child = known(ledger, message(1)), message("1.0", stage="write")
        assert ledger.claim(RUN, PHASE, child, "w2", LEASE).state == Refusal.UNPLANNED  # not yet declared: not run
        ledger.complete(parent.id, ledger.claim(RUN, PHASE, parent, "w1", LEASE).token, RUN, PHASE, [child], {})
        assert ledger.claim(RUN, PHASE, child, "w2", LEASE).granted
        forged = Message(message("1.1", stage="write").id, "write", "c0", b"never declared")
        assert ledger.claim(RUN, PHASE, forged, "w2", LEASE).state == Refusal.UNPLANNED

    def test_queued_children_are_those_of_the_parent_not_yet_claimed(self, ledger):
        a, b = known(ledger, message(1)), message(2)
        known(ledger, b)
        kids = {m.id: [message(f"{m.id[-1]}.{k}", stage="write") for k in range(3)] for m in (a, b)}
        for m in (a, b):
            ledger.complete(m.id, ledger.claim(RUN, PHASE, m, "w1", LEASE).token, RUN, PHASE, kids[m.id], {})
        ledger.claim(RUN, PHASE, kids[a.id][0], "w2", LEASE)
        assert ledger.queued_children(a.id) == kids[a.id][1:]
        assert ledger.queued_children(b.id) == kids[b.id]
        assert ledger.queued_children(kids[a.id][1].id) == []

    # splitting the last long ranges of a phase (swarm.slices, master.splitting) -----------

    def test_open_count_counts_what_is_not_finished(self, ledger):
        a, b, c = message(1), message(2), message(3)
        known(ledger, a, b, c)
        assert ledger.open_count(RUN, PHASE) == 3  # planned
        ledger.mark_queued([a.id, b.id])
        ledger.complete(a.id, ledger.claim(RUN, PHASE, a, "w1", LEASE).token, RUN, PHASE,
                        [message("1.0", stage="write")], {})
        ledger.claim(RUN, PHASE, b, "w1", LEASE)
        assert ledger.open_count(RUN, PHASE) == 3  # b claimed, c planned, a's child queued; a done
        assert ledger.open_count(RUN, PHASE, 2) == 2 and ledger.open_count(RUN, PHASE, 9) == 3  # up to a limit
        assert ledger.open_count(RUN, "reduce") == 0
        assert ledger.open_count("other@date=2024-05-01", PHASE) == 0

    def test_unstarted_are_the_queued_messages_no_worker_ever_claimed(self, ledger):
        fresh, held, released, planned, other = (message(1), message(2), message(3), message(4),
                                                 message(5, stage="write"))
        known(ledger, fresh, held, released, planned, other)
        ledger.mark_queued([fresh.id, held.id, released.id, other.id])
        ledger.claim(RUN, PHASE, held, "w1", LEASE)
        back = ledger.claim(RUN, PHASE, released, "w1", LEASE)
        ledger.release(released.id, back.token, MessageState.QUEUED, None, refund=True)  # queued again, once held
        assert ledger.unstarted(RUN, PHASE, ["read"], 10) == [fresh]
        assert ledger.unstarted(RUN, PHASE, ["read", "write"], 10) == [fresh, other]
        assert ledger.unstarted(RUN, PHASE, ["read", "write"], 1) == [fresh]
        assert ledger.unstarted(RUN, "reduce", ["read"], 10) == ledger.unstarted(RUN, PHASE, [], 10) == []

    def test_a_split_replaces_a_queued_message_never_claimed_by_its_parts(self, ledger):
        m = known(ledger, message(1))
        ledger.mark_queued([m.id])
        parts = [message("1:0"), message("1:1"), message("1:2")]
        assert ledger.split(RUN, PHASE, m.id, parts)
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 3}
        assert ledger.queued_children(m.id) == parts  # what a worker that receives it later publishes again
        assert ledger.claim(RUN, PHASE, m, "w1", LEASE).state == MessageState.DONE
        assert ledger.claim(RUN, PHASE, parts[0], "w1", LEASE).granted
        assert ledger.counters(RUN) == {}
        # Asked again, as a transaction run again after its COMMIT went unacknowledged: it landed.
        assert ledger.split(RUN, PHASE, m.id, parts)
        assert not ledger.split(RUN, PHASE, m.id, [message("1:9")])  # not parts it was split into
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 2, MessageState.CLAIMED: 1}

    def test_a_message_a_worker_holds_or_ever_held_is_never_split(self, ledger):
        held, released, done, planned, retried = message(1), message(2), message(3), message(4), message(6)
        known(ledger, held, released, done, planned, retried)
        ledger.mark_queued([held.id, released.id, done.id, retried.id])
        ledger.claim(RUN, PHASE, held, "w1", LEASE)
        back = ledger.claim(RUN, PHASE, released, "w1", LEASE)
        ledger.release(released.id, back.token, MessageState.QUEUED, "waited out an outage", refund=True)
        ledger.complete(done.id, ledger.claim(RUN, PHASE, done, "w1", LEASE).token, RUN, PHASE, [], {"rows": 1})
        ledger.claim(RUN, PHASE, retried, "w1", EXPIRED)  # its worker died: the master takes the lease back
        assert [r.id for r in ledger.reclaim_expired(RUN, ledger.now() + 1)] == [retried.id]
        before = ledger.counts(RUN, PHASE)
        for m in (held, released, done, planned, retried):
            assert not ledger.split(RUN, PHASE, m.id, [message(f"{m.id[-1]}:0"), message(f"{m.id[-1]}:1")]), m.id
        assert ledger.counts(RUN, PHASE) == before
        assert ledger.counters(RUN) == {"rows": 1}

    def test_a_split_and_a_claim_of_one_message_never_both_win(self, ledger, reopen):
        other = reopen()  # the master's ledger, as another process would hold it
        msgs = [message(i) for i in range(12)]
        known(ledger, *msgs)
        ledger.mark_queued([m.id for m in msgs])
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for m in msgs:
                parts = [message(f"{m.id.rsplit('/', 1)[1]}:{k}") for k in range(2)]
                claimed = pool.submit(ledger.claim, RUN, PHASE, m, "w1", LEASE)
                split = pool.submit(other.split, RUN, PHASE, m.id, parts)
                granted, replaced = claimed.result().granted, split.result()
                assert granted != replaced, m.id  # exactly one of them
                assert bool(ledger.queued_children(m.id)) == replaced
                assert ledger.claim(RUN, PHASE, m, "w2", LEASE).state == (
                    MessageState.DONE if replaced else MessageState.CLAIMED)

    # completion -------------------------------------------------------------------------

    def test_complete_records_children_and_counts(self, ledger):
        m = known(ledger, message(1))
        children = [message("1.0", stage="write"), message("1.1", stage="write")]
        claim = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        ledger.complete(m.id, claim.token, RUN, PHASE, children, {"rows": 3, "skipped": 1})
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 2}
        assert ledger.counters(RUN) == {"rows": 3, "skipped": 1}
        assert ledger.stale_queued(RUN, ledger.now() + 1) == children  # bodies and all, for re-publishing
        assert ledger.claim(RUN, PHASE, children[0], "w2", LEASE).granted

    def test_complete_with_a_stale_token_is_fenced(self, ledger):
        m = known(ledger, message(1))
        stale = ledger.claim(RUN, PHASE, m, "w1", EXPIRED)
        ledger.claim(RUN, PHASE, m, "w2", LEASE)
        with pytest.raises(Fenced):
            ledger.complete(m.id, stale.token, RUN, PHASE, [message("1.0", stage="write")], {"rows": 1})
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: 1}
        assert ledger.counters(RUN) == {}

    @pytest.mark.parametrize("stale_first", [True, False])
    def test_a_message_completed_under_two_tokens_counts_once(self, ledger, stale_first):
        m, child = known(ledger, message(1)), message("1.0", stage="write")
        stale = ledger.claim(RUN, PHASE, m, "w1", EXPIRED)
        current = ledger.claim(RUN, PHASE, m, "w2", LEASE)

        def finish(token: int) -> None:
            ledger.complete(m.id, token, RUN, PHASE, [child], {"rows": 5})

        if stale_first:
            with pytest.raises(Fenced):
                finish(stale.token)
            finish(current.token)
        else:
            finish(current.token)
            with pytest.raises(Fenced):
                finish(stale.token)
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
        assert ledger.counters(RUN) == {"rows": 5}

    def test_completing_again_with_the_same_token_changes_nothing(self, ledger):
        m, child = known(ledger, message(1)), message("1.0", stage="write")
        claim = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        for _ in range(2):  # as when the answer to the first COMMIT was lost
            ledger.complete(m.id, claim.token, RUN, PHASE, [child], {"rows": 5})
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
        assert ledger.counters(RUN) == {"rows": 5}

    def test_completes_in_one_group_get_the_outcome_each_would_get_alone(self, ledger):
        fresh, stale, again, unstorable, bare = (message(i) for i in range(5))
        known(ledger, fresh, stale, again, unstorable, bare)
        tokens = {m.id: ledger.claim(RUN, PHASE, m, "w1", LEASE).token for m in (fresh, again, unstorable, bare)}
        old = ledger.claim(RUN, PHASE, stale, "w1", EXPIRED).token
        current = ledger.claim(RUN, PHASE, stale, "w2", LEASE).token
        ledger.complete(again.id, tokens[again.id], RUN, PHASE, [message("2.0", stage="write")], {"rows": 2})
        calls = [
            (fresh, tokens[fresh.id], [message("0.0", stage="write"), message("0.1", stage="write")], {"rows": 1}),
            (stale, old, [message("1.0", stage="write")], {"rows": 100}),
            (again, tokens[again.id], [message("2.0", stage="write")], {"rows": 2}),
            (unstorable, tokens[unstorable.id], [Message(message("3.0").id, "write", "c0", None)], {"rows": 1000}),
            (bare, tokens[bare.id], [], {}),
        ]
        group = together(ledger._complete_group, None, [
            (m.id, Completion(m.id, token, RUN, PHASE, children, counts)) for m, token, children, counts in calls])
        assert [outcome(p) for p in group] == [None, Fenced, None, BackendError, None]
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 3, MessageState.CLAIMED: 2, MessageState.QUEUED: 3}
        assert ledger.counters(RUN) == {"rows": 3}
        ledger.complete(stale.id, current, RUN, PHASE, [], {"rows": 5})  # the new holder is not fenced
        ledger.complete(unstorable.id, tokens[unstorable.id], RUN, PHASE, [], {})  # nor the one that failed
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 5, MessageState.QUEUED: 3}
        assert ledger.counters(RUN) == {"rows": 8}

    # release, expiry, revival ----------------------------------------------------------

    def test_release_to_queued_for_a_retry(self, ledger):
        m = known(ledger, message(1))
        first = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        ledger.release(m.id, first.token, MessageState.QUEUED, "Fault: HBase busy")
        ledger.release(m.id, first.token, MessageState.QUEUED, "Fault: HBase busy")  # repeated: no change
        assert ledger.counts(RUN, PHASE) == {MessageState.QUEUED: 1}
        again = ledger.claim(RUN, PHASE, m, "w2", LEASE)
        assert again.granted and again.token > first.token and again.attempts == 2
        with pytest.raises(Fenced):
            ledger.release(m.id, first.token, MessageState.QUEUED, "late")

    def test_release_to_dead(self, ledger):
        m = known(ledger, message(1))
        claim = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        ledger.release(m.id, claim.token, MessageState.DEAD, "failed 5 times")
        with pytest.raises(Fenced):
            ledger.release(m.id, claim.token, MessageState.QUEUED, "a different ending")
        assert ledger.counts(RUN, PHASE) == {MessageState.DEAD: 1}
        with pytest.raises(ValueError):
            ledger.release(m.id, claim.token, MessageState.DONE, None)

    def test_reclaim_expired_requeues_and_fences_the_old_holder(self, ledger):
        big = message(1, body=os.urandom(MIB))
        live = message(2)
        known(ledger, big, live)
        known(ledger, message(3, run="other-run"), run="other-run")
        expired = ledger.claim(RUN, PHASE, big, "w1", EXPIRED)
        ledger.claim(RUN, PHASE, live, "w1", LEASE)
        assert ledger.claim("other-run", PHASE, message(3, run="other-run"), "w1", EXPIRED).granted
        assert ledger.reclaim_expired(RUN, ledger.now()) == [big]
        assert ledger.reclaim_expired(RUN, ledger.now()) == []
        assert ledger.counts(RUN, PHASE) == {MessageState.QUEUED: 1, MessageState.CLAIMED: 1}
        with pytest.raises(Fenced):
            ledger.complete(big.id, expired.token, RUN, PHASE, [], {"rows": 1})
        again = ledger.claim(RUN, PHASE, big, "w2", LEASE)
        assert again.granted and again.token > expired.token + 1 and again.attempts == 2
        assert [f.error for f in ledger.failures(RUN)] == ["lease expired"]

    def test_stale_queued_returns_untouched_queued_messages_and_touches_them(self, ledger, clock):
        queued, planned = message(1), message(2)
        ledger.save_plan(RUN, PHASE, [queued, planned])
        ledger.mark_queued([queued.id])
        clock.t = T0 + 100
        assert ledger.stale_queued(RUN, T0 + 50) == [queued]
        assert ledger.stale_queued(RUN, T0 + 50) == []
        clock.t = T0 + 200
        assert ledger.stale_queued(RUN, T0 + 150) == [queued]
        assert ledger.stale_queued("other-run", T0 + 500) == []

    def test_revive_requeues_a_dead_message_with_attempts_reset_and_its_run_running(self, ledger):
        m, done = message(1), message(2)
        known(ledger, m, done)
        dead = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        ledger.release(m.id, dead.token, MessageState.DEAD, "failed 5 times")
        ledger.update_run(RUN, status=RunStatus.FAILED, error="phase map: 1 dead-lettered message(s)", finished=True)
        ledger.revive(m.id)
        assert ledger.counts(RUN, PHASE) == {MessageState.QUEUED: 1, MessageState.PLANNED: 1}
        run = ledger.get_run(RUN)
        assert (run.status, run.error, run.finished_at) == (RunStatus.RUNNING, None, None)
        with pytest.raises(Fenced):
            ledger.release(m.id, dead.token, MessageState.DEAD, "late")
        again = ledger.claim(RUN, PHASE, m, "w2", LEASE)
        assert again.granted and again.attempts == 1 and again.token > dead.token
        ledger.complete(done.id, ledger.claim(RUN, PHASE, done, "w1", LEASE).token, RUN, PHASE, [], {})
        ledger.update_run(RUN, status=RunStatus.DONE, finished=True)
        ledger.revive(done.id)  # only dead messages come back
        assert ledger.counts(RUN, PHASE) == {MessageState.CLAIMED: 1, MessageState.DONE: 1}
        assert ledger.get_run(RUN).status == RunStatus.DONE

    # the master's view ------------------------------------------------------------------

    def test_counts_and_chunk_counts(self, ledger):
        maps = [message(i) for i in range(4)]
        known(ledger, *maps, phase="map")
        ledger.save_plan(RUN, "reduce", [message(0, phase="reduce", stage="sum")])
        ledger.mark_queued([m.id for m in maps[1:]])
        ledger.claim(RUN, "map", maps[2], "w1", LEASE)
        done = ledger.claim(RUN, "map", maps[3], "w1", LEASE)
        ledger.complete(maps[3].id, done.token, RUN, "map", [], {})
        assert ledger.counts(RUN) == {
            MessageState.PLANNED: 2, MessageState.QUEUED: 1, MessageState.CLAIMED: 1, MessageState.DONE: 1}
        assert ledger.counts(RUN, "map") == {
            MessageState.PLANNED: 1, MessageState.QUEUED: 1, MessageState.CLAIMED: 1, MessageState.DONE: 1}
        assert ledger.chunk_counts(RUN) == {
            "map": {MessageState.PLANNED: 1, MessageState.QUEUED: 1, MessageState.CLAIMED: 1, MessageState.DONE: 1},
            "reduce": {MessageState.PLANNED: 1},
        }
        assert ledger.counts("other-run") == {} and ledger.chunk_counts("other-run") == {}

    def test_done_since_counts_recent_finishes_per_stage(self, ledger, clock):
        maps = [message(i) for i in range(3)]
        known(ledger, *maps, phase="map")
        for m in maps[:2]:
            claim = ledger.claim(RUN, "map", m, "w1", LEASE)
            ledger.complete(m.id, claim.token, RUN, "map", [], {})
        assert ledger.done_since(RUN, 0) == {maps[0].stage: 2}
        assert ledger.done_since(RUN, ledger.now() + 1) == {}

    def test_reject_marks_only_known_unfinished_messages_with_their_own_body(self, ledger):
        m = known(ledger, message(0))
        assert ledger.reject(m.id, b"a forged copy", "bad payload") is False
        assert ledger.counts(RUN) == {MessageState.PLANNED: 1}
        assert ledger.reject(m.id, m.body, "bad payload") is True
        assert ledger.counts(RUN) == {MessageState.DEAD: 1}
        assert ledger.reject(m.id, m.body, "again") is False
        assert ledger.reject("never/seen/id/x/0", b"x", "stray") is False
        assert ledger.counts(RUN) == {MessageState.DEAD: 1}

    def test_failures_list_dead_aborted_and_errored_messages(self, ledger):
        retried, dead, aborted, fine = (message(i) for i in range(4))
        known(ledger, retried, dead, aborted, fine)
        ends = [(retried, MessageState.QUEUED, "Fault: HBase busy"), (dead, MessageState.DEAD, None),
                (aborted, MessageState.ABORTED, "abort: bad row")]
        for m, state, error in ends:
            ledger.release(m.id, ledger.claim(RUN, PHASE, m, "w1", LEASE).token, state, error)
        ledger.complete(fine.id, ledger.claim(RUN, PHASE, fine, "w1", LEASE).token, RUN, PHASE, [], {})
        failures = {f.id: f for f in ledger.failures(RUN)}
        assert {(i, f.state, f.error, f.attempts) for i, f in failures.items()} == {
            (retried.id, MessageState.QUEUED, "Fault: HBase busy", 1), (dead.id, MessageState.DEAD, None, 1),
            (aborted.id, MessageState.ABORTED, "abort: bad row", 1),
        }
        assert failures[dead.id].stage == "read" and failures[dead.id].chunk == "c0"
        assert len(ledger.failures(RUN, limit=2)) == 2
        assert ledger.failures("other-run") == []

    def test_failures_tell_recovered_messages_from_the_others(self, ledger):
        recovered, dead, retrying = (message(i) for i in range(3))
        known(ledger, recovered, dead, retrying)
        for m in (recovered, retrying):
            claim = ledger.claim(RUN, PHASE, m, "w1", LEASE)
            ledger.release(m.id, claim.token, MessageState.QUEUED, "Fault: HBase busy")
        ledger.complete(recovered.id, ledger.claim(RUN, PHASE, recovered, "w1", LEASE).token, RUN, PHASE, [], {})
        ledger.release(dead.id, ledger.claim(RUN, PHASE, dead, "w1", LEASE).token, MessageState.DEAD, "failed 5 times")
        assert [(f.id, f.state, f.error, f.attempts) for f in ledger.failures(RUN, recovered=True)] == [
            (recovered.id, MessageState.DONE, "Fault: HBase busy", 2)]
        assert {f.id for f in ledger.failures(RUN, recovered=False)} == {dead.id, retrying.id}
        assert {f.id for f in ledger.failures(RUN)} == {recovered.id, dead.id, retrying.id}

    def test_stage_counts_are_per_stage_and_state(self, ledger):
        reads = [message(i) for i in range(4)]
        writes = [message(i, stage="write") for i in range(3)]
        known(ledger, *reads, *writes)
        ledger.save_plan(RUN, "reduce", [message(0, phase="reduce", stage="sum")])
        known(ledger, message(0, run="other-run"), run="other-run")
        ledger.mark_queued([m.id for m in reads[1:] + writes])
        ledger.claim(RUN, PHASE, reads[2], "w1", LEASE)
        for m in (reads[3], writes[0], writes[1]):
            ledger.complete(m.id, ledger.claim(RUN, PHASE, m, "w1", LEASE).token, RUN, PHASE, [], {})
        ledger.release(writes[2].id, ledger.claim(RUN, PHASE, writes[2], "w1", LEASE).token, MessageState.DEAD, "x")
        assert ledger.stage_counts(RUN) == {
            "read": {MessageState.PLANNED: 1, MessageState.QUEUED: 1, MessageState.CLAIMED: 1, MessageState.DONE: 1},
            "write": {MessageState.DONE: 2, MessageState.DEAD: 1},
            "sum": {MessageState.PLANNED: 1},
        }
        assert ledger.stage_counts("no-such-run") == {}

    def test_done_series_counts_finishes_and_a_counter_per_stage_and_time_bucket(self, ledger, clock):
        reads = [message(i) for i in range(7)]
        write = message(0, stage="write")
        stranger = message(0, run="other-run")
        known(ledger, *reads, write)
        known(ledger, stranger, run="other-run")
        ends = [  # (message, when it is done, its counts); T0 starts a minute
            (reads[0], T0 - 1, {"rows": 1000}),
            (reads[1], T0 + 5, {"rows": 3}),
            (reads[2], T0 + 59.9, {"rows": 4, "bytes": 100}),
            (reads[3], T0 + 61, {}),
            (reads[4], T0 + 119.5, {"bytes": 9}),
            (write, T0 + 30, {"rows": 10}),
            (stranger, T0 + 5, {"rows": 7}),
        ]
        for m, at, counts in ends:
            clock.t = at
            run = RUN if m is not stranger else "other-run"
            ledger.complete(m.id, ledger.claim(run, PHASE, m, "w1", LEASE).token, run, PHASE, [], counts)
        clock.t = T0 + 20
        ledger.claim(RUN, PHASE, reads[5], "w1", LEASE)  # not done: not counted
        ledger.release(reads[6].id, ledger.claim(RUN, PHASE, reads[6], "w1", LEASE).token, MessageState.DEAD, "x")
        assert ledger.done_series(RUN, 60) == {
            "read": [(T0 - 60, 1, 1000), (T0, 2, 7), (T0 + 60, 2, 0)],
            "write": [(T0, 1, 10)],
        }
        assert ledger.done_series(RUN, 60, counter="bytes") == {
            "read": [(T0 - 60, 1, 0), (T0, 2, 100), (T0 + 60, 2, 9)],
            "write": [(T0, 1, 0)],
        }
        assert ledger.done_series(RUN, 3600.0) == {"read": [(T0 - 3600, 1, 1000), (T0, 4, 7)], "write": [(T0, 1, 10)]}
        assert ledger.done_series(RUN, 60, counter="nothing") == {
            "read": [(T0 - 60, 1, 0), (T0, 2, 0), (T0 + 60, 2, 0)], "write": [(T0, 1, 0)]}
        assert ledger.done_series("no-such-run", 60) == {}
        with pytest.raises(ValueError):
            ledger.done_series(RUN, 0)

    def test_message_info_is_one_messages_state_attempts_and_error(self, ledger, clock):
        m = known(ledger, message(1, stage="write", chunk="c7"))
        assert ledger.message_info(m.id) == Failure(m.id, "write", "c7", MessageState.PLANNED, 0, None, T0)
        clock.t = T0 + 10
        ledger.release(m.id, ledger.claim(RUN, PHASE, m, "w1", LEASE).token, MessageState.QUEUED, "Fault: busy")
        clock.t = T0 + 20
        ledger.release(m.id, ledger.claim(RUN, PHASE, m, "w1", LEASE).token, MessageState.DEAD, "failed twice")
        assert ledger.message_info(m.id) == Failure(
            m.id, "write", "c7", MessageState.DEAD, 2, "failed twice", T0 + 20)
        assert ledger.message_info(message(2).id) is None

    def test_keys_are_exact_strings(self, ledger):
        ids = ["x/a", "x/A", "x/a "]
        known(ledger, *[Message(i, "read", "c0", b"b") for i in ids], message(1))
        for i in ids:
            assert ledger.claim(RUN, PHASE, Message(i, "read", "c0", b"b"), "w1", LEASE).granted
        names = {"n": 1, "N": 2, "n ": 3, "größe": 4}
        claim = ledger.claim(RUN, PHASE, message(1), "w1", LEASE)
        ledger.complete(message(1).id, claim.token, RUN, PHASE, [], names)
        assert ledger.counters(RUN) == names
        assert ledger.counts(RUN) == {MessageState.CLAIMED: 3, MessageState.DONE: 1}

    # dead letters -----------------------------------------------------------------------

    def test_dead_letters(self, ledger):
        body = os.urandom(MIB)
        first = ledger.add_dead_letter("swarm.nightly.read", "body is not valid msgpack", body, None)
        second = ledger.add_dead_letter("swarm.nightly.write", "failed 5 times", b"\x81\xa1v\x01", message(1).id)
        assert first != second
        assert [d.id for d in ledger.dead_letters()] == [first, second]
        assert [d.id for d in ledger.dead_letters(queue="swarm.nightly.write")] == [second]
        record = ledger.get_dead_letter(first)
        assert (record.queue, record.message_id, record.reason, record.body, record.replayed_at) == (
            "swarm.nightly.read", None, "body is not valid msgpack", body, None)
        assert (record.size, record.sha256, record.truncated) == (MIB, hashlib.sha256(body).hexdigest(), False)
        assert ledger.get_dead_letter(second).message_id == message(1).id
        assert ledger.get_dead_letter(second + 1000) is None
        ledger.mark_replayed([first, first])
        assert [d.id for d in ledger.dead_letters()] == [second]
        assert [d.id for d in ledger.dead_letters(replayed=True)] == [first, second]
        assert ledger.get_dead_letter(first).replayed_at is not None
        assert len(ledger.dead_letters(replayed=True, limit=1)) == 1

    def test_a_dead_letter_too_large_to_keep_is_stored_cut_with_its_size_and_digest(self, ledger):
        huge = os.urandom(20 * MIB)
        first = ledger.add_dead_letter("swarm.nightly.read", "r" * 100_000, huge, None)
        small = ledger.add_dead_letter("swarm.nightly.read", "empty", b"", None)
        record = ledger.get_dead_letter(first)
        assert (len(record.body), record.size, record.truncated) == (MAX_DEAD_LETTER_BYTES, 20 * MIB, True)
        assert record.body == huge[:MAX_DEAD_LETTER_BYTES] and record.sha256 == hashlib.sha256(huge).hexdigest()
        assert len(record.reason) <= MAX_ERROR_CHARS
        assert ledger.get_dead_letter(small).body == b""
        cut = ledger.add_dead_letter("swarm.nightly.read", "cut on the way", b"abc", None, size=10, sha256="ff" * 32)
        assert (ledger.get_dead_letter(cut).size, ledger.get_dead_letter(cut).sha256) == (10, "ff" * 32)

    # housekeeping -----------------------------------------------------------------------

    def test_prune_deletes_runs_that_finished_before_the_cutoff_and_nothing_else(self, ledger, clock):
        statuses = (RunStatus.DONE, RunStatus.FAILED, RunStatus.DONE, None)
        runs = {f"nightly@date=2024-05-0{d}": status for d, status in enumerate(statuses, start=1)}
        for day, (run, status) in enumerate(runs.items()):
            clock.t = T0 + day * DAY
            m = known(ledger, message(1, run=run), run=run)
            claim = ledger.claim(run, PHASE, m, "w1", LEASE)
            ledger.complete(m.id, claim.token, run, PHASE, [message("1.0", stage="write", run=run)], {"rows": 1})
            ledger.add_dead_letter("swarm.nightly.read", "failed", b"x", m.id)
            if status:
                ledger.update_run(run, status=status, finished=True)
        clock.t = T0 + 2.5 * DAY
        ledger.add_dead_letter("swarm.nightly.read", "undecodable, recent", b"y", None)
        preview = ledger.prune(T0 + 2 * DAY, dry_run=True)
        assert (preview.runs, preview.messages) == (list(runs)[:2], 4)
        assert ledger.get_run(list(runs)[0]) is not None  # a dry run deletes nothing
        pruned = ledger.prune(T0 + 2 * DAY)
        assert (pruned.runs, pruned.messages, pruned.dead_letters) == (list(runs)[:2], 4, 2)
        for run in list(runs)[:2]:
            assert ledger.get_run(run) is None and ledger.counts(run) == {} and ledger.counters(run) == {}
            assert ledger.phase_state(run, PHASE) is None
        for run in list(runs)[2:]:  # finished later, and still running
            assert ledger.counts(run) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
            assert ledger.counters(run) == {"rows": 1}
        assert len(ledger.dead_letters()) == 3  # those of the runs kept, and the recent one
        assert ledger.prune(T0 + 2 * DAY).runs == []

    # the master's lock ------------------------------------------------------------------

    def test_a_second_master_is_refused_naming_the_holder(self, ledger, reopen):
        ledger.lock_master(RUN, "master A")
        ledger.lock_master(RUN, "master A")  # renewal
        other = reopen()
        for contender, name in ((other, "master B"), (ledger, "master B")):
            with pytest.raises(MasterLocked) as refused:
                contender.lock_master(RUN, name)
            assert refused.value.key == RUN
            assert "master A" in refused.value.holder and str(os.getpid()) in refused.value.holder
        other.lock_master("another-run", "master B")  # a different key is a different lock
        ledger.unlock_master(RUN)
        other.lock_master(RUN, "master B")
        with pytest.raises(MasterLocked, match="master B"):
            ledger.lock_master(RUN, "master A")

    def test_master_holder_names_who_holds_the_lock_now(self, ledger, reopen):
        other = reopen()
        assert ledger.master_holder(RUN) is None and other.master_holder(RUN) is None
        ledger.lock_master(RUN, "master A")
        for viewer in (ledger, other):
            holder = viewer.master_holder(RUN)
            assert holder is not None and "master A" in holder and str(os.getpid()) in holder
        assert other.master_holder("another-run") is None
        ledger.unlock_master(RUN)
        assert ledger.master_holder(RUN) is None and other.master_holder(RUN) is None
        other.lock_master(RUN, "master B")
        assert "master B" in ledger.master_holder(RUN)

    def test_the_lock_dies_with_a_killed_master(self, ledger, url):
        doomed = subprocess.Popen([sys.executable, "-c", DOOMED_MASTER, url, RUN], stdout=subprocess.PIPE, text=True)
        try:
            assert doomed.stdout.readline().strip() == "locked"
            with pytest.raises(MasterLocked) as refused:
                ledger.lock_master(RUN, "next master")
            assert "doomed master" in refused.value.holder and str(doomed.pid) in refused.value.holder
            doomed.kill()
            doomed.wait()
            retry_while_locked(lambda: ledger.lock_master(RUN, "next master"))
        finally:
            if doomed.poll() is None:
                doomed.kill()
                doomed.wait()
            doomed.stdout.close()

    def test_check_history_is_of_other_nights_published_runs_with_the_same_params_but_the_date(self, ledger):
        for day, region, rows in [(1, "eu", 10), (2, "us", 99), (3, "eu", 12), (4, "eu", 14)]:
            _published(ledger, f"j@date=d{day},region={region}", {"date": f"d{day}", "region": region}, rows)
        _published(ledger, "j@date=d4,region=eu+r1", {"date": "d4", "region": "eu"}, 15)  # replaces d4's
        assert ledger.check_history("j", "rows", 7, "j@date=d9,region=eu", {"region": "eu"}) == [15, 12, 10]
        assert ledger.check_history("j", "rows", 2, "j@date=d3,region=eu", {"region": "eu"}) == [15, 10]
        assert ledger.check_history("j", "rows", 7, "none", {}) == [15, 12, 99, 10]
        assert ledger.check_history("j", "other", 7, "none") == []


    def test_a_publication_begins_once_per_run_and_finishes_with_the_run_done(self, ledger):
        ledger.open_run("j@date=d1", "j", {"date": "d1"})
        first = ledger.begin_publish("j@date=d1", "j", "j@date=d1")
        assert (first.state, first.previous) == (PublishState.PUBLISHING, None)
        assert ledger.begin_publish("j@date=d1", "j", "j@date=d1") == first  # again: the same
        ledger.finish_publish("j@date=d1", "j@date=d1")
        assert ledger.get_run("j@date=d1").status == RunStatus.DONE
        ledger.open_run("j@date=d1+r1", "j", {"date": "d1"})
        again = ledger.begin_publish("j@date=d1", "j", "j@date=d1+r1")
        assert (again.run_id, again.previous) == ("j@date=d1+r1", "j@date=d1")
        with pytest.raises(PublishRefused, match="the publication of j@date=d1\\+r1 has not finished"):
            ledger.begin_publish("j@date=d1", "j", "j@date=d1+r2")
        ledger.decide("j@date=d1+r1", "reject", "no", status=RunStatus.REJECTED)
        assert [(d.action, d.reason) for d in ledger.decisions("j@date=d1+r1")] == [("reject", "no")]
        assert ledger.get_run("j@date=d1+r1").status == RunStatus.REJECTED

    # fleet controls ----------------------------------------------------------------------

    def test_a_control_is_set_read_and_lifted_and_another_ledger_sees_it(self, ledger, reopen, clock):
        paused = ledger.set_control("j", "scan", ControlState.PAUSED, "ops@h1", "region server busy")
        assert (paused.job, paused.stage, paused.state, paused.generation) == ("j", "scan", ControlState.PAUSED, 1)
        assert (paused.updated_at, paused.issued_by, paused.reason) == (T0, "ops@h1", "region server busy")
        assert reopen().controls("j") == [paused]  # a worker process on another host sees the same
        clock.t = T0 + 5
        again = ledger.set_control("j", "scan", ControlState.PAUSED, "ops@h2", "still busy")
        assert (again.generation, again.updated_at, again.issued_by) == (2, T0 + 5, "ops@h2")
        assert again.reason == "still busy"
        assert ledger.controls("j") == [again]  # one row per job, stage and state
        assert ledger.lift_controls("j", "scan") == [again]
        assert ledger.controls("j") == [] and ledger.lift_controls("j", "scan") == []

    def test_controls_of_a_job_are_its_own_and_the_fleet_wide_ones(self, ledger):
        ledger.set_control("j", EVERY_STAGE, ControlState.PAUSED, "ops", "")
        ledger.set_control("j", EVERY_STAGE, ControlState.DRAINING, "ops", "deploy")
        ledger.set_control("k", "reduce", ControlState.PAUSED, "ops", "")
        ledger.set_control(FLEET, EVERY_STAGE, ControlState.RELOAD, "ops", "")
        seen = {(c.job, c.stage, c.state) for c in ledger.controls("j")}
        assert seen == {("j", "", ControlState.PAUSED), ("j", "", ControlState.DRAINING), ("", "", ControlState.RELOAD)}
        assert {(c.job, c.stage) for c in ledger.controls("k")} == {("k", "reduce"), ("", "")}
        assert len(ledger.controls()) == 4
        assert ledger.controls("J") == [c for c in ledger.controls() if c.job == FLEET]  # exact names

    def test_lifting_a_jobs_controls_keeps_its_reloads_and_other_jobs(self, ledger):
        for stage in ("", "scan", "reduce"):
            ledger.set_control("j", stage, ControlState.PAUSED, "ops", "")
        ledger.set_control("j", "", ControlState.DRAINING, "ops", "")
        ledger.set_control("j", "", ControlState.RELOAD, "ops", "")
        ledger.set_control("k", "", ControlState.PAUSED, "ops", "")
        assert [c.stage for c in ledger.lift_controls("j", "scan", (ControlState.PAUSED,))] == ["scan"]
        lifted = ledger.lift_controls("j")
        assert {(c.stage, c.state) for c in lifted} == {("", ControlState.PAUSED), ("reduce", ControlState.PAUSED),
                                                        ("", ControlState.DRAINING)}
        assert [(c.job, c.state) for c in ledger.controls()] == [("j", ControlState.RELOAD), ("k", ControlState.PAUSED)]

    def test_a_reload_generation_rises_each_time_it_is_asked_for(self, ledger):
        gens = [ledger.set_control(FLEET, EVERY_STAGE, ControlState.RELOAD, "ops", "").generation for _ in range(3)]
        assert gens == [1, 2, 3]
        assert ledger.set_control("j", EVERY_STAGE, ControlState.RELOAD, "ops", "").generation == 1

    def test_a_controls_reason_is_kept_within_the_ledgers_limit(self, ledger):
        control = ledger.set_control("j", "", ControlState.PAUSED, "ops", "x" * (MAX_ERROR_CHARS * 2))
        assert len(control.reason) <= MAX_ERROR_CHARS
        assert ledger.controls("j")[0].reason == control.reason

    def test_pruning_leaves_the_controls_in_force(self, ledger, clock):
        ledger.set_control("j", "", ControlState.DRAINING, "ops", "")
        ledger.prune(T0 + 100 * DAY)
        assert [c.state for c in ledger.controls("j")] == [ControlState.DRAINING]


def _published(ledger, run_id, params, measured):
    """A run of job j, with one check measured, published as its night's result."""
    ledger.open_run(run_id, "j", params)
    ledger.save_checks(run_id, [CheckResult("rows", True, measured)])
    ledger.begin_publish(run_id.split("+r")[0], "j", run_id)
    ledger.finish_publish(run_id.split("+r")[0], run_id)
