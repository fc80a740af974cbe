"""Processing one delivery, start to ack: the one place where effects are applied.

Order matters for the guarantees: table writes are flushed, the ledger
records the message done with its children (fenced by its lease token),
the children are published and confirmed by the broker, and only then is
the delivery acked. A crash at any point before the ack leaves the
delivery unacked, so the broker delivers it again, and every step is
idempotent on the way round: a redelivered parent that the ledger has as
done publishes again those of its children still queued.

Only planned work runs: a message is claimed only if the ledger recorded
it (the master's plan, or a parent's complete) with this very body, in a
running run, and only after its signature is checked. Anything else is
dead-lettered with the reason and changes nothing.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import threading
import time
from typing import Callable, Sequence

from swarm import metrics
from swarm.broker import Broker, Delivery, stage_queue
from swarm.context import Context, ReadTables, params_of
from swarm.effects import Effects, Send
from swarm.envelope import Envelope, decode, encode
from swarm.errors import Abort, BackendError, BadMessage, Fenced, HandlerError, TableError, clip, describe
from swarm.failpoints import failpoint
from swarm.hooks import DEFAULT_HOOKS, Call, Hook, chain
from swarm.ledger import Claim, ClaimRequest, Completion, Message, MessageState, Refusal, RunStatus, WorkerLedger
from swarm.outage import Outages
from swarm.signing import SiteKeys, process_keys
from swarm.stage import Job, Stage
from swarm.table import TableStore

log = logging.getLogger("swarm.worker")

# Outcomes, as counted in metrics and returned for tests.
DONE, SKIPPED, RETRY, DEAD, ABORTED, REJECTED, REQUEUED, FENCED, TIMED_OUT = (
    "done", "skipped", "retry", "dead", "aborted", "rejected", "requeued", "fenced", "timed_out",
)


@dataclasses.dataclass
class InFlight:
    """A claimed message: what the lease renewer and the watchdog see."""

    env: Envelope
    stage: Stage
    delivery: Delivery
    token: int
    attempts: int
    deadline: float = math.inf  # set when its handler starts
    batch: list[InFlight] = dataclasses.field(default_factory=list)  # claimed together, handled in turn
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    started: bool = False
    settled: bool = False

    def begin(self, now: float) -> bool:
        """Start the handler's clock; False if the watchdog has handed the message back already."""
        with self.lock:
            if self.settled:
                return False
            self.started, self.deadline = True, now + self.stage.timeout
            return True

    def withdraw(self) -> bool:
        """Settle a message whose handler has not started; False if it has, or it is settled."""
        with self.lock:
            if self.started or self.settled:
                return False
            self.settled = True
            return True

    def settle(self) -> bool:
        """True for the first caller only: the handler's return or the watchdog's time-out."""
        with self.lock:
            if self.settled:
                return False
            self.settled = True
            return True


@dataclasses.dataclass
class Item:
    """One delivery of a batch on its way to an outcome."""

    delivery: Delivery
    env: Envelope | None = None
    stage: Stage | None = None
    flight: InFlight | None = None
    effects: Effects | None = None
    children: list[Message] = dataclasses.field(default_factory=list)
    outcome: str | None = None


class Processor:
    """Takes deliveries through decode, dedup, claim, handler, effects, ledger and ack.

    A batch is several deliveries of one stage taken at once: one grouped
    claim, the handlers in turn, then one table write, one confirmed publish
    and one grouped complete for all that succeeded, then the acks. Every
    message still gets its own outcome.
    """

    def __init__(
        self,
        job: Job,
        broker: Broker,
        ledger: WorkerLedger,
        tables: TableStore,
        holder: str,
        lease: float = 60.0,
        hooks: Sequence[Hook] = DEFAULT_HOOKS,
        options: dict | None = None,
        backend_pause: float = 5.0,
        rng: random.Random | None = None,
        keys: SiteKeys | None = None,
    ):
        self.job, self.broker, self.ledger, self.tables = job, broker, ledger, tables
        self.keys = keys or process_keys()
        self.holder, self.lease = holder, lease
        self.call_handler: Callable[[Call], Effects] = chain(hooks)
        self.read_tables = ReadTables(tables)
        self.options = options or {}
        self.backend_pause = backend_pause
        self.rng = rng or random.Random()
        self.inflight: dict[str, InFlight] = {}
        self._inflight_lock = threading.Lock()
        self.outages = Outages(log)

    # entry points ------------------------------------------------------------

    def handle(self, delivery: Delivery) -> str:
        """One delivery; never raises."""
        return self.handle_batch([delivery])[0]

    def handle_batch(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Never raises: every delivery ends in an ack, a requeue or (on a lost connection) neither."""
        items = [Item(d) for d in deliveries]
        for item in items:
            self._guard(item, lambda i=item: self._accept(i))
        self._guard_all(items, self._claim)
        flights = [i.flight for i in items if i.flight is not None and i.outcome is None]
        self._track(flights)
        try:
            for item in items:
                self._guard(item, lambda i=item: self._call(i))
            self._guard_all(items, self._commit)
        finally:
            self._untrack(flights)
        tally = collections.Counter((item.stage.name if item.stage else "?", item.outcome) for item in items)
        for (stage_name, outcome), n in tally.items():
            metrics.MESSAGES.labels(self.job.name, stage_name, outcome).inc(n)
        return [item.outcome for item in items]

    def _guard(self, item: Item, step: Callable[[], str | None]) -> None:
        """Run one item's step, unless it has its outcome already; any failure becomes its outcome."""
        if item.outcome is None:
            try:
                item.outcome = step()
            except Exception as exc:  # noqa: BLE001 - each message gets an outcome, the worker goes on
                item.outcome = self._failed(item, exc)

    def _guard_all(self, items: list[Item], step: Callable[[list[Item]], None]) -> None:
        """A step over the items still open; a failure of the whole step is each one's outcome."""
        open_items = [i for i in items if i.outcome is None]
        if not open_items:
            return
        try:
            step(open_items)
        except Exception as exc:  # noqa: BLE001
            for item in open_items:
                if item.outcome is None:
                    item.outcome = self._failed(item, exc)

    def _failed(self, item: Item, exc: Exception) -> str:
        if isinstance(exc, BadMessage):
            return self._reject(item.delivery, str(exc), getattr(exc, "envelope", None))
        if isinstance(exc, Fenced):
            item.delivery.ack()  # our lease was taken over: the new holder finishes it
            return FENCED
        if isinstance(exc, BackendError):
            if item.flight is not None:
                raised_in_handler = item.flight.started and item.effects is None
                if raised_in_handler and not item.flight.settle():
                    return TIMED_OUT  # the watchdog has already retried this message
                self._release_quietly(item.flight, exc)
            return self._backend_failed(item.delivery, exc)
        if item.flight is not None:
            self._release_quietly(item.flight)
        log.error("unexpected error handling a message on %s; returning it to the queue",
                  item.delivery.queue, exc_info=exc)
        return self._requeue(item.delivery)

    def _accept(self, item: Item) -> None:
        """Decode and check that the message belongs on this queue; ``BadMessage`` otherwise."""
        delivery = item.delivery
        queue_stage = self.job.stages.get(delivery.queue.rsplit(".", 1)[-1])
        if queue_stage:
            env = decode(delivery.body, self.keys, queue_stage.max_body)
        else:
            env = decode(delivery.body, self.keys)
        try:
            item.stage = self._check(delivery, env)
        except BadMessage as exc:
            if env.job == self.job.name:
                exc.envelope = env  # ours and decodable: the ledger records it dead too
            raise
        item.env = env

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

    # the happy path -----------------------------------------------------------

    def _claim(self, items: list[Item]) -> None:
        calls = [ClaimRequest(i.env.run, i.env.phase,
                              Message(i.env.id, i.env.stage, i.env.chunk, bytes(i.delivery.body)))
                 for i in items]
        batch: list[InFlight] = []
        for item, claim in zip(items, self.ledger.claim_batch(calls, self.holder, self.lease)):
            self._guard(item, lambda i=item, c=claim: self._granted(i, c, batch))

    def _granted(self, item: Item, claim: Claim | Exception, batch: list[InFlight]) -> str | None:
        if isinstance(claim, Exception):
            raise claim
        if not claim.granted:
            return self._not_granted(item, claim)
        item.flight = InFlight(item.env, item.stage, item.delivery, claim.token, claim.attempts, batch=batch)
        if claim.attempts > item.stage.retry.max_attempts:
            # Delivered again and again without an outcome: its workers died on it.
            lost = claim.attempts - 1
            reason = f"no outcome after {lost} deliveries: its worker died each time (outages do not count)"
            return self._give_up(item.flight, reason)
        batch.append(item.flight)
        return None

    def _not_granted(self, item: Item, claim: Claim) -> str:
        delivery = item.delivery
        if claim.state == Refusal.RUN_ENDED and claim.detail == RunStatus.CANCELLED:
            delivery.ack()  # an operator ended the run: its work is dropped, not dead-lettered
            return SKIPPED
        refusal = _refusal(item.env, claim)
        if refusal is not None:  # not planned work: it must change nothing
            return self._reject(delivery, refusal, None)
        if claim.state == MessageState.CLAIMED:
            # Another holder's lease is live: it may be working on it, or it
            # died (this is then the broker's redelivery). Look again once
            # that lease can have run out; a duplicate is skipped then.
            self.broker.publish([(delivery.queue, bytes(delivery.body))], delay=self.lease)
        elif claim.state == MessageState.DONE:
            self._publish_children(self.ledger.queued_children(item.env.id))
        delivery.ack()  # done, dead or aborted already: nothing to do
        return SKIPPED

    def _publish_children(self, children: Sequence[Message]) -> None:
        """Publish children the ledger holds; for a redelivered parent, those whose worker died before publishing."""
        if not children:
            return
        self.broker.publish([(stage_queue(self.job.name, c.stage), c.body) for c in children])
        for c in children:
            metrics.PUBLISHED.labels(self.job.name, c.stage).inc()

    def _track(self, flights: list[InFlight]) -> None:
        with self._inflight_lock:
            for flight in flights:
                self.inflight[flight.env.id] = flight

    def _untrack(self, flights: list[InFlight]) -> None:
        with self._inflight_lock:
            for flight in flights:
                self.inflight.pop(flight.env.id, None)

    def _release_quietly(self, flight: InFlight, outage: BackendError | None = None) -> None:
        """Hand the message back so its next delivery can be claimed at once.

        After an ``outage`` the delivery was not the handler's attempt: it is given back.
        """
        error = f"waited out an outage: {describe(outage)}" if outage else "returned to the queue after an error"
        try:
            self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, error, refund=outage is not None)
        except (BackendError, Fenced):
            pass  # the lease will expire instead

    def _call(self, item: Item) -> str | None:
        """Run the handler; None when its effects are ready to commit with the batch."""
        flight, env, stage = item.flight, item.env, item.stage
        if not flight.begin(time.monotonic()):
            return REQUEUED  # the watchdog handed it back while an earlier handler of the batch hung
        ctx = Context(self.job.name, env.run, self.read_tables, params_of(env.run), self.options)
        metrics.BUSY.labels(self.job.name, stage.name).inc()
        try:
            effects = self.call_handler(Call(stage, ctx, _as_attempt(env, flight.attempts), flight.attempts,
                                             self.job.tables or None))
        except HandlerError as exc:
            error, permanent = exc.reason, isinstance(exc, Abort)
            return self._settled(flight, lambda: (self._abort if permanent else self._fault)(flight, error))
        finally:
            metrics.BUSY.labels(self.job.name, stage.name).dec()
        if not flight.settle():
            return TIMED_OUT  # the watchdog has already retried this message
        try:
            item.children = [self._child(env, stage, i, send) for i, send in enumerate(effects.sends)]
        except Abort as exc:  # a Send to an undeclared stage, found before anything was applied
            return self._abort(flight, exc.reason)
        item.effects = effects
        return None

    def _settled(self, flight: InFlight, finish: Callable[[], str]) -> str:
        if not flight.settle():
            return TIMED_OUT  # the watchdog has already retried this message
        return finish()

    def _commit(self, items: list[Item]) -> None:
        """Apply the effects of every handled item at once, record each done with its children, publish them, ack."""
        items = self._apply(items)
        if not items:
            return
        failpoint("worker.after_apply")
        calls = [Completion(i.env.id, i.flight.token, i.env.run, i.env.phase, i.children, i.effects.counts)
                 for i in items]
        for item, error in zip(items, self.ledger.complete_batch(calls)):
            self._guard(item, lambda e=error: self._completed(e))
        failpoint("worker.after_complete")
        done = [i for i in items if i.outcome is None]
        try:
            self._publish_children([c for i in done for c in i.children])
        except BackendError as exc:
            # Recorded done, children not all confirmed: the parent comes back, finds
            # itself done, and publishes its still-queued children then.
            for item in done:
                item.outcome = self._backend_failed(item.delivery, exc)
            return
        failpoint("worker.after_publish")
        for item in done:
            item.delivery.ack()
            item.outcome = DONE
        if done:
            self.outages.recovered()

    def _apply(self, items: list[Item]) -> list[Item]:
        """Write the batch's table effects at once; the items still open after.

        A table or family that does not exist fails the whole write: each
        item is then written alone, and those that fail are aborted with the
        store's reason, so the run records the cause.
        """
        mutations = [m for i in items for m in i.effects.mutations]
        if not mutations:
            return items
        try:
            self.tables.apply(mutations)
            return items
        except TableError:
            pass
        for item in items:
            self._guard(item, lambda i=item: self._apply_alone(i))
        return [i for i in items if i.outcome is None]

    def _apply_alone(self, item: Item) -> str | None:
        try:
            if item.effects.mutations:
                self.tables.apply(item.effects.mutations)
        except TableError as exc:
            return self._abort(item.flight, f"stage {item.stage.name}: {exc}")
        return None

    @staticmethod
    def _completed(error: Exception | None) -> None:
        if error is not None:
            raise error

    def _child(self, env: Envelope, stage: Stage, index: int, send: Send) -> Message:
        return child_message(env, stage, index, send, self.keys)

    # failures -------------------------------------------------------------------

    def _fault(self, flight: InFlight, error: str) -> str:
        if flight.attempts >= flight.stage.retry.max_attempts:
            return self._give_up(flight, f"failed {flight.attempts} times; last error: {error}")
        delay = flight.stage.retry.delay(flight.attempts, self.rng)
        queue = stage_queue(self.job.name, flight.env.stage)
        # Publish the retry first: if we die before the release, the lease
        # expires and a duplicate is skipped; the other order could lose it.
        # The body goes unchanged: the ledger counts the attempts, and a
        # claim recognises the message by its body.
        self.broker.publish([(queue, bytes(flight.delivery.body))], delay=delay)
        self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, error)
        flight.delivery.ack()
        metrics.RETRIES.labels(self.job.name, flight.stage.name).inc()
        log.warning("retrying %s in %.1fs (attempt %d): %s", flight.env.id, delay, flight.attempts, _first_line(error))
        return RETRY

    def _give_up(self, flight: InFlight, reason: str) -> str:
        queue = stage_queue(self.job.name, flight.env.stage)
        self.broker.dead_letter(queue, flight.delivery.body, reason)
        self.ledger.release(flight.env.id, flight.token, MessageState.DEAD, reason)
        flight.delivery.ack()
        metrics.DEAD_LETTERS.labels(self.job.name, flight.stage.name).inc()
        log.error("dead-lettered %s: %s", flight.env.id, _first_line(reason))
        return DEAD

    def _abort(self, flight: InFlight, reason: str) -> str:
        self.ledger.release(flight.env.id, flight.token, MessageState.ABORTED, reason)
        flight.delivery.ack()
        log.error("aborted %s: %s", flight.env.id, _first_line(reason))
        return ABORTED

    def _reject(self, delivery: Delivery, reason: str, env: Envelope | None) -> str:
        """Bad input: to the dead-letter queue with the reason, and on with the next message.

        ``env``: the message is authentic (its signature checked) and the
        ledger may expect it; it is then recorded dead, so the master sees why.
        """
        try:
            self.broker.dead_letter(delivery.queue, delivery.body, reason)
            if env is not None:
                self._record_dead(env, delivery.body, reason)
        except BackendError as exc:
            return self._backend_failed(delivery, exc)
        delivery.ack()
        log.error("rejected a message on %s: %s", delivery.queue, clip(_first_line(reason), 300))
        return REJECTED

    def _record_dead(self, env: Envelope, body: bytes, reason: str) -> None:
        """A message the ledger expects (a planned chunk, a recorded child) ends dead, so the master sees why."""
        self.ledger.reject(env.id, body, f"rejected: {reason}")

    def _backend_failed(self, delivery: Delivery, exc: BackendError) -> str:
        """Hand the message back for later without counting a delivery against it.

        A plain requeue would count toward the broker's delivery limit and
        dead-letter good work during a long ledger or table-store outage;
        a delayed copy, acked, waits the outage out on a delay queue.
        """
        age = self.outages.failed(exc)  # logged once per outage, not once per message
        delay = self.outages.pause(age, self.backend_pause) * self.rng.uniform(1.0, 1.5)
        try:
            self.broker.publish([(delivery.queue, bytes(delivery.body))], delay=delay)
        except BackendError:
            time.sleep(delay)  # the broker is down too: the requeue below is then moot, but do not spin
            return self._requeue(delivery)
        delivery.ack()
        return REQUEUED

    @staticmethod
    def _requeue(delivery: Delivery) -> str:
        try:
            delivery.requeue()
        except Exception:  # noqa: BLE001 - a lost connection redelivers it anyway
            log.exception("could not requeue on %s", delivery.queue)
        return REQUEUED

    # called from the worker's housekeeping thread ------------------------------------

    def leases(self) -> list[tuple[str, int]]:
        with self._inflight_lock:
            return [(f.env.id, f.token) for f in self.inflight.values() if not f.settled]

    def expire_overdue(self, now: float | None = None) -> list[str]:
        """Handle every call past its stage's timeout as a fault; their late results are dropped.

        The messages claimed in the same batch and still waiting behind the
        overdue call are handed back to the queue, so they do not wait on it.
        """
        now = time.monotonic() if now is None else now
        with self._inflight_lock:
            overdue = [f for f in self.inflight.values() if f.deadline <= now and not f.settled]  # inf until begun
        expired = []
        for flight in overdue:
            if flight.settle():
                try:
                    self._fault(flight, f"timed out after {flight.stage.timeout:g}s")
                    expired.append(flight.env.id)
                except (Fenced, BackendError) as exc:
                    log.error("could not retry timed-out %s: %s", flight.env.id, exc)
            for waiting in flight.batch:
                if waiting.withdraw():
                    self._hand_back(waiting)
        return expired

    def _hand_back(self, flight: InFlight) -> None:
        """A claimed message whose handler never started: on the queue again, for any worker."""
        try:
            self.broker.publish([(flight.delivery.queue, bytes(flight.delivery.body))])
            self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, None, refund=True)  # it never ran
            flight.delivery.ack()
        except (Fenced, BackendError) as exc:
            log.error("could not hand back %s: %s", flight.env.id, exc)


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


def _first_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _as_attempt(env: Envelope, attempts: int) -> Envelope:
    """The envelope as its handler sees it: ``attempt`` is the ledger's count of deliveries.

    The envelope's own field undercounts: a copy the master re-publishes after
    a lost lease, or one a worker put back while another held the lease,
    still says 1. The ledger counts every grant, and it is the count retries
    and dead-lettering go by, so the handler sees that one too.
    """
    return env if env.attempt == attempts else dataclasses.replace(env, attempt=attempts)
