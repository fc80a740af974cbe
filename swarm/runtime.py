"""The message path: a batch of deliveries of one stage, from the broker to their acks, read top to bottom.

    accept  decode (signature first) and check each delivery belongs here
    claim   one grouped claim: only planned work, with this very body, in a running run
    handle  each handler in turn, on the tables as they are: effects as data
    commit  the batch's table writes flushed; each message recorded done with its
            children (fenced by its lease token); the children published, confirmed;
            only then the acks

Each step gives a message a verdict (``swarm.outcome``) or lets it go on;
``swarm.settle`` carries verdicts out. A crash anywhere before the ack
leaves the delivery unacked: the broker delivers it again, and every step is
idempotent on the way round (a redelivered parent that the ledger has as done
publishes again those of its children still queued). Cross-cutting concerns
(metrics, log lines) are middleware (``swarm.middleware``).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from typing import Callable, Mapping, Sequence

from swarm.backpressure import Backpressure
from swarm.broker import Broker, Delivery, stage_queue
from swarm.context import RERUN_MARK, Context, ReadTables, params_of
from swarm.effects import Send
from swarm.envelope import Envelope, decode, encode
from swarm.errors import Abort, BackendError, BadMessage, HandlerError, QueueFull, TableError, describe
from swarm.failpoints import failpoint
from swarm.handling import call_handler
from swarm.leases import InFlight, Leases
from swarm.ledger import Claim, ClaimRequest, Completion, Message, MessageState, Refusal, RunStatus, WorkerLedger
from swarm.middleware import Middleware, default_middleware
from swarm.outage import Outages
from swarm.outcome import (
    Done,
    GiveUp,
    HandBack,
    HandedBack,
    LeaseLost,
    Outcome,
    Reject,
    Retry,
    Skip,
    Stop,
    TimedOut,
    Verdict,
    of_error,
)
from swarm.settle import Item, Settler
from swarm.signing import SiteKeys, process_keys
from swarm.slices import HandOn, SplitSettings
from swarm.stage import Job, Stage
from swarm.table import TableStore

log = logging.getLogger("swarm.worker")

# Of the lease: what must be left of it, as the worker last heard from the ledger, for a batch to start its table
# writes. Renewals come every third of a lease, so only a worker that missed one does without.
WRITE_MARGIN = 1 / 3

# Outcomes, as tests and callers name them.
DONE, SKIPPED, RETRY, DEAD, ABORTED, REJECTED, REQUEUED, FENCED, TIMED_OUT = (
    Outcome.DONE, Outcome.SKIPPED, Outcome.RETRY, Outcome.DEAD, Outcome.ABORTED, Outcome.REJECTED,
    Outcome.REQUEUED, Outcome.FENCED, Outcome.TIMED_OUT,
)
Step = Callable[[Item], "Verdict | None"]


class Processor:
    """Takes batches of deliveries of a job's stages along the path; every message gets its own outcome."""

    def __init__(
        self,
        job: Job,
        broker: Broker,
        ledger: WorkerLedger,
        tables: TableStore,
        holder: str,
        lease: float = 60.0,
        options: dict | None = None,
        backend_pause: float = 5.0,
        rng: random.Random | None = None,
        keys: SiteKeys | None = None,
        leases: Leases | None = None,
        middleware: Middleware | None = None,
        split: SplitSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``clock``: the monotonic clock the leases are kept by, as this worker sees them."""
        self.job, self.broker, self.ledger, self.tables = job, broker, ledger, tables
        self.keys = keys or process_keys()
        self.holder, self.lease, self.clock = holder, lease, clock
        self.read_tables = ReadTables(tables)
        self._reads: dict[str, Mapping[str, str]] = {}  # run -> Run.reads; fixed when the run opens
        self.options = options or {}
        self.leases = leases or Leases()
        self.middleware = middleware or default_middleware(job.name)
        self.outages = Outages(log)
        self.backpressure = Backpressure()  # full bounded queues: the worker holds back the stages feeding them
        self.settler = Settler(job.name, broker, ledger, self.middleware, self.outages, rng or random.Random(),
                               backend_pause, self.backpressure)
        self.hand_on = HandOn(job, ledger, broker, self.read_tables, self.keys, split)  # a handler's Continue

    # the path -------------------------------------------------------------------

    def handle(self, delivery: Delivery) -> Outcome:
        """One delivery; never raises."""
        return self.handle_batch([delivery])[0]

    def handle_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Never raises: every delivery ends acked, requeued or (on a lost connection) neither."""
        items = [Item(d) for d in deliveries]
        self._each(items, self._accept)
        self._all(items, self._claim)
        flights = [i.flight for i in items if i.flight is not None and i.outcome is None]
        with self.leases.holding(flights):
            self._each(items, self._handle)
            self._all(items, self._commit)
        return [i.outcome or Outcome.REQUEUED for i in items]

    def _accept(self, item: Item) -> Verdict | None:
        """Decode (the signature is checked first) and check the message belongs on this queue."""
        queue_stage = self.job.stages.get(item.delivery.queue.rsplit(".", 1)[-1])
        if queue_stage is not None:
            env = decode(item.delivery.body, self.keys, queue_stage.max_body)
        else:
            env = decode(item.delivery.body, self.keys)
        if env.job == self.job.name:
            item.env = env  # authentic and ours: a rejection is recorded against it in the ledger too
        try:
            item.stage = self._check(item.delivery, env)
        except BadMessage as exc:
            return Reject(str(exc), authentic=env.job == self.job.name)
        item.env = env
        return None

    def _check(self, delivery: Delivery, env: Envelope) -> Stage:
        if env.job != self.job.name:
            raise BadMessage(f"message for job {env.job!r} on a queue of job {self.job.name!r}")
        stage = self.job.stages.get(env.stage)
        if stage is None:
            raise BadMessage(f"unknown stage {env.stage!r} for job {self.job.name!r}")
        if delivery.queue != stage_queue(self.job.name, env.stage):
            raise BadMessage(f"message for stage {env.stage!r} arrived on queue {delivery.queue!r}")
        if env.phase != stage.phase:
            raise BadMessage(f"stage {env.stage!r} belongs to phase {stage.phase!r}, message says {env.phase!r}")
        if stage.validate is not None:
            try:
                stage.validate(env.payload)
            except (BadMessage, ValueError, TypeError, KeyError) as exc:
                raise BadMessage(f"payload fails stage {stage.name!r} validation: {exc}") from None
        return stage

    def _claim(self, items: list[Item]) -> None:
        """One grouped claim for the batch; each message's own answer."""
        calls = [_claim_request(i) for i in items]
        batch: list[InFlight] = []
        stage_name = items[0].stage_name
        self.middleware.before_claim(stage_name, len(items))
        started, sent = time.perf_counter(), self.clock()
        answers = self.ledger.claim_batch(calls, self.holder, self.lease)
        self.middleware.after_claim(stage_name, sum(isinstance(a, Claim) and a.granted for a in answers),
                                    time.perf_counter() - started)
        for item, answer in zip(items, answers, strict=True):
            verdict = of_error(answer) if isinstance(answer, Exception) else self._granted(item, answer, batch, sent)
            if verdict is not None:
                self.settler.settle(item, verdict)

    def _granted(self, item: Item, claim: Claim, batch: list[InFlight], sent: float) -> Verdict | None:
        if claim.token is None:  # not granted
            return self._refused(item, claim)
        env, stage = item.accepted()
        item.flight = InFlight(env, stage, item.delivery, claim.token, claim.attempts, batch=batch,
                               held_until=sent + self.lease)
        if claim.attempts > stage.retry.max_attempts:
            # Delivered again and again without an outcome: its workers died on it, or lost their leases.
            return GiveUp(f"no outcome after {claim.attempts - 1} deliveries: each time its lease ran out first "
                          "(its worker died, or could not renew the lease in time: see worker.lease; "
                          "outages do not count)")
        batch.append(item.flight)
        return None

    def _refused(self, item: Item, claim: Claim) -> Verdict:
        if claim.state == Refusal.RUN_ENDED and claim.detail == RunStatus.CANCELLED:
            return Skip()  # an operator ended the run: its work is dropped, not dead-lettered
        env, _ = item.accepted()
        refusal = _refusal(env, claim)
        if refusal is not None:
            return Reject(refusal)  # not planned work: it must change nothing
        if claim.state == MessageState.CLAIMED:
            return Skip(look_again_after=self.lease)
        if claim.state == MessageState.DONE:
            return Skip(children=self.ledger.queued_children(env.id))
        return Skip()  # dead or aborted already

    def _handle(self, item: Item) -> Verdict | None:
        """Run the handler; None when its effects are ready to commit with the batch."""
        flight = item.held()
        env, stage = item.accepted()
        if not flight.begin(time.monotonic()):
            return HandedBack()  # while an earlier handler of the batch hung
        try:
            reads = self._reads_of(env.run)
        except BackendError as exc:
            return _first(flight, of_error(exc))
        ctx = Context(self.job.name, env.run, self.read_tables, params_of(env.run), self.options, env.phase,
                      self.job.phases, reads, slice=env.seq)
        self.middleware.before_handler(stage, env)
        started, failure = time.perf_counter(), None
        try:
            effects = call_handler(stage, ctx, _as_attempt(env, flight.attempts), self.job.tables or None)
        except HandlerError as exc:
            failure = "abort" if isinstance(exc, Abort) else "fault"
            return _first(flight, Stop(exc.reason) if failure == "abort" else Retry(exc.reason))
        except BackendError as exc:
            return _first(flight, of_error(exc))  # an outage: not the handler's attempt
        finally:
            self.middleware.after_handler(stage, env, time.perf_counter() - started, failure)
        if not flight.settle():
            return TimedOut()  # the watchdog has already retried this message
        try:
            item.children = [child_message(env, stage, i, send, self.keys) for i, send in enumerate(effects.sends)]
            item.children += self.hand_on.messages(env, stage, effects.continued)
        except Abort as exc:  # a Send to an undeclared stage, found before anything was applied
            return Stop(exc.reason)
        effects.mutations = self.job.staged(env.run, effects.mutations)
        item.effects = effects
        return None

    def _reads_of(self, run: str) -> Mapping[str, str]:
        """Which generations a run reads: only a rerun reads others' (and its ledger row says which)."""
        if RERUN_MARK not in run:
            return {}
        if run not in self._reads:
            self._reads[run] = self.ledger.reads(run)
        return self._reads[run]

    def _commit(self, items: list[Item]) -> None:
        """Write the batch's tables, record each message done with its children, publish them, ack."""
        stage_name, started = items[0].stage_name, time.perf_counter()
        self.middleware.before_commit(stage_name, len(items))
        committed = 0
        try:
            committed = self._write_record_publish(items)
        finally:
            self.middleware.after_commit(stage_name, committed, time.perf_counter() - started)

    def _write_record_publish(self, items: list[Item]) -> int:
        """The commit's steps in their order; how many messages it acked done."""
        self._each(items, self._still_held)
        items = self._apply([i for i in items if i.outcome is None])
        if not items:
            return 0
        failpoint("worker.after_apply")
        calls = [_completion(i) for i in items]
        for item, error in zip(items, self.ledger.complete_batch(calls), strict=True):
            if error is not None:
                self.settler.settle(item, of_error(error))
        failpoint("worker.after_complete")
        done = [i for i in items if i.outcome is None]
        try:
            self.settler.publish_children([c for i in done for c in i.children])
        except QueueFull as full:
            # A bounded successor stayed full: the parents of the children it refused come back later
            # (swarm.backpressure); the others are done.
            done = self.settler.defer_parents(done, full)
        except BackendError as exc:
            # Recorded done, children not all confirmed: the parent comes back, finds
            # itself done, and publishes its still-queued children then.
            for item in done:
                self.settler.settle(item, of_error(exc))
            return 0
        failpoint("worker.after_publish")
        for item in done:
            self.settler.settle(item, Done())
        if done:
            self.outages.recovered()
        return len(done)

    def _still_held(self, item: Item) -> Verdict | None:
        """None if the lease surely outlasts the batch's writes; else nothing of the message is written.

        The ledger fences a stale holder's record, but not its table writes: a
        worker cut off from the ledger must stop writing before another can
        have taken its messages over (their lease ended in the ledger's eyes).
        """
        flight = item.held()
        now = self.clock()
        if flight.holds(now, self.lease * WRITE_MARGIN):
            return None
        if flight.held_until == -math.inf:
            why = "the ledger has taken its lease back"
        else:
            why = f"{max(0.0, flight.held_until - now):.1f} s of it left as far as this worker knows: renewals fail"
        log.warning("message %s: its lease may end before its table writes (%s); nothing written, it is looked "
                    "at again in %g s", flight.env.id, why, self.lease)
        return LeaseLost(look_again_after=self.lease)

    def _apply(self, items: list[Item]) -> list[Item]:
        """The batch's table writes at once; the items still open after.

        A table or family that does not exist fails the whole write: each
        item is then written alone, and those that fail are aborted with the
        store's reason, so the run records the cause.
        """
        mutations = [m for i in items for m in i.handled().mutations]
        if mutations:
            try:
                self.tables.apply(mutations)
            except TableError:
                self._each(items, self._apply_alone)
        return [i for i in items if i.outcome is None]

    def _apply_alone(self, item: Item) -> Verdict | None:
        try:
            mutations = item.handled().mutations
            if mutations:
                self.tables.apply(mutations)
        except TableError as exc:
            return Stop(f"stage {item.stage_name}: {exc}")
        return None

    # running steps ----------------------------------------------------------------

    def _each(self, items: list[Item], step: Step) -> None:
        """``step`` for each item still open; its verdict, or the verdict of what it raised, is settled at once."""
        for item in items:
            if item.outcome is not None:
                continue
            try:
                verdict = step(item)
            except Exception as exc:  # noqa: BLE001 - each message gets an outcome, the worker goes on
                verdict = of_error(exc)
            if verdict is not None:
                self.settler.settle(item, verdict)

    def _all(self, items: list[Item], step: Callable[[list[Item]], None]) -> None:
        """``step`` over the items still open; if the whole step fails, that is each one's verdict."""
        open_items = [i for i in items if i.outcome is None]
        if not open_items:
            return
        try:
            step(open_items)
        except Exception as exc:  # noqa: BLE001
            for item in open_items:
                if item.outcome is None:
                    self.settler.settle(item, of_error(exc))

    # the watchdog's, from the worker's housekeeping thread ---------------------------

    def renew_leases(self) -> None:
        """Extend the leases held; one the ledger no longer has for this claim is lost at once."""
        held = self.leases.renewable()
        if not held:
            return
        sent = self.clock()
        kept = self.ledger.renew(held, self.lease)
        self.leases.renewed(held, kept, sent + self.lease)

    def expire_overdue(self, now: float | None = None) -> list[str]:
        """Handle every call past its stage's timeout as a fault; their late results are dropped.

        The messages claimed in the same batch and still waiting behind the
        overdue call are handed back to the queue, so they do not wait on it.
        """
        expired = []
        for flight in self.leases.overdue(time.monotonic() if now is None else now):
            if flight.settle():
                outcome = self.settler.settle(_item(flight), Retry(f"timed out after {flight.stage.timeout:g}s"))
                if outcome in (Outcome.RETRY, Outcome.DEAD):
                    expired.append(flight.env.id)
            for waiting in flight.batch:
                if waiting.withdraw():
                    self.settler.settle(_item(waiting), HandBack())
        return expired


def _claim_request(item: Item) -> ClaimRequest:
    env, _ = item.accepted()
    return ClaimRequest(env.run, env.phase, Message(env.id, env.stage, env.chunk, bytes(item.delivery.body)))


def _completion(item: Item) -> Completion:
    """The ledger's record of a handled message: done, with its children and counts, fenced by its lease token."""
    flight = item.held()
    env = flight.env
    return Completion(env.id, flight.token, env.run, env.phase, item.children, item.handled().counts)


def _first(flight: InFlight, verdict: Verdict) -> Verdict:
    """``verdict``, if the handler's return is the first to settle the message; the watchdog's time-out was, else."""
    return verdict if flight.settle() else TimedOut()


def _item(flight: InFlight) -> Item:
    return Item(flight.delivery, flight.env, flight.stage, flight)


def child_message(env: Envelope, stage: Stage, index: int, send: Send, keys: SiteKeys) -> Message:
    """The message a handler's ``index``-th ``Send`` makes, signed; ``Abort`` when the stage may not send it."""
    if send.stage not in stage.next:
        raise Abort(f"stage {stage.name} sent to {send.stage!r}, which is not in its next={list(stage.next)}")
    try:
        child = env.child(send.stage, dict(send.payload), send.key or f"{env.seq}.{index}")
        return Message(child.id, child.stage, child.chunk, encode(child, keys))
    except (BadMessage, TypeError, ValueError) as exc:
        raise Abort(f"stage {stage.name} sent an invalid message: {describe(exc)}") from None


def _refusal(env: Envelope, claim: Claim) -> str | None:
    """Why a delivery is not planned work, or None when its claim was refused for the message's own state."""
    if claim.state == Refusal.UNPLANNED:
        return (f"not planned: the ledger has no message {env.id} (neither the master's plan nor a parent "
                "that ran recorded it)")
    if claim.state == Refusal.MISMATCH:
        return f"not planned: message {env.id} differs from the one the ledger recorded under that id (a stale copy)"
    if claim.state == Refusal.RUN_ENDED:
        return f"run {env.run} is {claim.detail}: it takes no more work"
    return None


def _as_attempt(env: Envelope, attempts: int) -> Envelope:
    """The envelope as its handler sees it: ``attempt`` is the ledger's count of deliveries.

    The ledger counts every grant, and it is the count retries and
    dead-lettering go by, so the handler sees that one too.
    """
    return env if env.attempt == attempts else dataclasses.replace(env, attempt=attempts)
