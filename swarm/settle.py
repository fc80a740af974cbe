"""Settling a delivery: the one place where a verdict is carried out (retry, dead letter, abort, ack).

Order matters as in the rest of the path: a retry's copy is published
before the lease is released (dying in between leaves a duplicate that is
skipped, never a loss), and a delivery is acked last.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from typing import Sequence

from swarm.backpressure import Backpressure
from swarm.broker import Broker, Delivery, stage_queue
from swarm.effects import Effects
from swarm.envelope import Envelope
from swarm.errors import BackendError, QueueFull, clip, describe
from swarm.errors import Fenced as FencedError
from swarm.leases import InFlight
from swarm.ledger import Message, MessageState, WorkerLedger
from swarm.middleware import Middleware
from swarm.outage import Outages
from swarm.outcome import (
    SETTLED_ELSEWHERE,
    Deferred,
    GiveUp,
    HandBack,
    LeaseLost,
    Outage,
    Outcome,
    Reject,
    Retry,
    Skip,
    Stop,
    Unexpected,
    Verdict,
)
from swarm.stage import Stage

log = logging.getLogger("swarm.worker")


@dataclasses.dataclass
class Item:
    """One delivery on its way through the path, and what is known of it so far."""

    delivery: Delivery
    env: Envelope | None = None
    stage: Stage | None = None
    flight: InFlight | None = None
    effects: Effects | None = None
    children: list[Message] = dataclasses.field(default_factory=list)
    outcome: Outcome | None = None

    @property
    def stage_name(self) -> str:
        return self.stage.name if self.stage else "?"

    # Each step of the path fills in its part; these give it to the later steps, typed. Asking before the step
    # that fills it is a bug in the path, not a fate for the message.

    def accepted(self) -> tuple[Envelope, Stage]:
        """Its envelope and stage, once it is accepted."""
        if self.env is None or self.stage is None:
            raise AssertionError("a message's envelope and stage asked for before it was accepted")
        return self.env, self.stage

    def held(self) -> InFlight:
        """Its lease, once it is claimed."""
        if self.flight is None:
            raise AssertionError("a message's lease asked for before it was claimed")
        return self.flight

    def handled(self) -> Effects:
        """Its handler's effects, once the handler has returned them."""
        if self.effects is None:
            raise AssertionError("a message's effects asked for before it was handled")
        return self.effects


class Settler:
    """Carries verdicts out against the broker and the ledger, and tells the middleware."""

    def __init__(self, job: str, broker: Broker, ledger: WorkerLedger, middleware: Middleware, outages: Outages,
                 rng: random.Random, backend_pause: float, backpressure: Backpressure | None = None):
        self.job, self.broker, self.ledger = job, broker, ledger
        self.middleware, self.outages, self.rng, self.backend_pause = middleware, outages, rng, backend_pause
        self.backpressure = backpressure or Backpressure()

    def settle(self, item: Item, verdict: Verdict) -> Outcome:
        """Carry ``verdict`` out for ``item``; its outcome. A backend failing meanwhile makes it an outage."""
        if isinstance(verdict, SETTLED_ELSEWHERE):
            item.outcome = verdict.outcome
            return verdict.outcome
        try:
            outcome = self._carry(item, verdict)
        except FencedError:
            item.delivery.ack()  # the lease was taken over while it was settled: the new holder finishes it
            outcome = Outcome.FENCED
        except QueueFull as exc:
            outcome = self._carry(item, Deferred(exc))  # a bounded queue it publishes to is full
        except BackendError as exc:
            outcome = self._carry(item, Outage(exc))
        item.outcome = outcome
        self.middleware.after_settle(item.stage_name, outcome)
        return outcome

    def publish_children(self, children: Sequence[Message]) -> None:
        """Publish messages the ledger has recorded, confirmed; then tell the middleware.

        A full bounded queue is waited for a while (``swarm.backpressure``);
        ``QueueFull`` then names the children still refused, the others are published.
        """
        if not children:
            return
        self.backpressure.publish(self.broker.publish, [(stage_queue(self.job, c.stage), c.body) for c in children],
                                  on_full=self._on_full)
        by_stage: dict[str, int] = {}
        for c in children:
            by_stage[c.stage] = by_stage.get(c.stage, 0) + 1
        for stage, n in by_stage.items():
            self.middleware.after_publish(stage, n)

    def defer_parents(self, items: Sequence[Item], full: QueueFull) -> list[Item]:
        """After ``publish_children`` of ``items``' children met full queues: hand back each item one of whose
        children was refused (recorded done, it publishes them when it comes back); the items whose children
        were all published, for the caller to finish."""
        rest, first = [], 0
        for item in items:
            last = first + len(item.children)
            if any(first <= i < last for i in full.refused):
                self.settle(item, Deferred(full, recorded=True))
            else:
                rest.append(item)
            first = last
        return rest

    def _on_full(self, full: QueueFull) -> None:
        for queue in full.queues:
            self.middleware.on_queue_full(queue.removeprefix(stage_queue(self.job, "")), len(full.refused))

    def _carry(self, item: Item, verdict: Verdict) -> Outcome:
        if isinstance(verdict, Retry):
            return self._retry(item, verdict.error)
        if isinstance(verdict, GiveUp):
            return self._give_up(item, verdict.reason)
        if isinstance(verdict, Stop):
            return self._stop(item, verdict.reason)
        if isinstance(verdict, Reject):
            return self._reject(item, verdict)
        if isinstance(verdict, Outage):
            return self._outage(item, verdict.error)
        if isinstance(verdict, Deferred):
            return self._defer(item, verdict)
        if isinstance(verdict, Unexpected):
            return self._unexpected(item, verdict.error)
        if isinstance(verdict, HandBack):
            return self._hand_back(item)
        if isinstance(verdict, Skip):
            self._skip(item, verdict)
        if isinstance(verdict, LeaseLost):
            self._skip(item, Skip(look_again_after=verdict.look_again_after))
        item.delivery.ack()  # Done, Skip, Fenced, LeaseLost
        return verdict.outcome

    def _skip(self, item: Item, skip: Skip) -> None:
        if skip.look_again_after is not None:
            # Another holder's lease is live: it may be working on it, or it died (this is then the
            # broker's redelivery). Look again once that lease can have run out.
            self.broker.publish([(item.delivery.queue, bytes(item.delivery.body))], delay=skip.look_again_after)
        self.publish_children(skip.children)

    def _retry(self, item: Item, error: str) -> Outcome:
        flight = item.held()
        stage = flight.stage
        if flight.attempts >= stage.retry.max_attempts:
            return self._give_up(item, f"failed {flight.attempts} times; last error: {error}")
        delay = stage.retry.delay(flight.attempts, self.rng)
        # The copy first: dying before the release leaves a duplicate, the other order could lose it. The
        # body goes unchanged: the ledger counts the attempts, and a claim recognises the message by its body.
        self.broker.publish([(item.delivery.queue, bytes(item.delivery.body))], delay=delay)
        self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, error)
        item.delivery.ack()
        self.middleware.on_retry(stage, flight.env, delay, flight.attempts, error)
        return Outcome.RETRY

    def _give_up(self, item: Item, reason: str) -> Outcome:
        flight = item.held()
        stage = flight.stage
        self.broker.dead_letter(stage_queue(self.job, stage.name), item.delivery.body, reason)
        self.ledger.release(flight.env.id, flight.token, MessageState.DEAD, reason)
        item.delivery.ack()
        self.middleware.on_dead_letter(stage.name, flight.env.id, reason)
        return Outcome.DEAD

    def _stop(self, item: Item, reason: str) -> Outcome:
        flight = item.held()
        stage = flight.stage
        self.ledger.release(flight.env.id, flight.token, MessageState.ABORTED, reason)
        item.delivery.ack()
        self.middleware.on_abort(stage, flight.env, reason)
        return Outcome.ABORTED

    def _reject(self, item: Item, reject: Reject) -> Outcome:
        """Bad input: dead-lettered with the reason; recorded dead only if authentic, so forgeries change nothing."""
        delivery = item.delivery
        self.broker.dead_letter(delivery.queue, delivery.body, reject.reason)
        if reject.authentic and item.env is not None:
            self.ledger.reject(item.env.id, delivery.body, f"rejected: {reject.reason}")
        delivery.ack()
        log.error("rejected a message on %s: %s", delivery.queue, clip(reject.reason.splitlines()[0], 300))
        self.middleware.on_dead_letter(item.stage_name, item.env.id if item.env else None, reject.reason)
        return Outcome.REJECTED

    def _outage(self, item: Item, exc: BackendError) -> Outcome:
        """Hand the message back for later, its attempt given back: an outage is not the handler's try.

        A plain requeue would count toward the broker's delivery limit and
        dead-letter good work during a long outage; a delayed copy, acked,
        waits it out on a delay queue.
        """
        if item.flight is not None:
            self._release_quietly(item.flight, f"waited out an outage: {describe(exc)}", refund=True)
        age = self.outages.failed(exc)  # said once per outage, not once per message
        delay = self.outages.pause(age, self.backend_pause) * self.rng.uniform(1.0, 1.5)
        try:
            self.broker.publish([(item.delivery.queue, bytes(item.delivery.body))], delay=delay)
        except BackendError:
            time.sleep(delay)  # the broker is down too: the requeue below is then moot, but do not spin
            return _requeue(item.delivery)
        item.delivery.ack()
        return Outcome.REQUEUED

    def _defer(self, item: Item, deferred: Deferred) -> Outcome:
        """A bounded queue it publishes to stayed full: back on its delay queue, no attempt spent, no error recorded.

        Its lease, if it still holds one, is given back with its attempt; a
        message recorded done holds none (its children wait in the ledger).
        """
        if item.flight is not None and not deferred.recorded:
            self._release_quietly(item.flight, None, refund=True)
        delay = self.backpressure.pause(deferred.error.queues) * self.rng.uniform(1.0, 1.5)
        try:
            self.broker.publish([(item.delivery.queue, bytes(item.delivery.body))], delay=delay)
        except BackendError:
            time.sleep(delay)  # the broker is down too: do not spin
            return _requeue(item.delivery)
        item.delivery.ack()
        return Outcome.REQUEUED

    def _unexpected(self, item: Item, exc: BaseException) -> Outcome:
        if item.flight is not None:
            self._release_quietly(item.flight, "returned to the queue after an error")
        log.error("unexpected error handling a message on %s; returning it to the queue", item.delivery.queue,
                  exc_info=exc)
        return _requeue(item.delivery)

    def _hand_back(self, item: Item) -> Outcome:
        """Claimed, its handler never started: on the queue again, for any worker, its attempt given back."""
        flight = item.held()
        self.broker.publish([(item.delivery.queue, bytes(item.delivery.body))])
        self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, None, refund=True)
        item.delivery.ack()
        return Outcome.REQUEUED

    def _release_quietly(self, flight: InFlight, error: str | None, refund: bool = False) -> None:
        """Hand the message back so its next delivery can be claimed at once."""
        try:
            self.ledger.release(flight.env.id, flight.token, MessageState.QUEUED, error, refund=refund)
        except (BackendError, FencedError):
            pass  # the lease will expire instead


def _requeue(delivery: Delivery) -> Outcome:
    try:
        delivery.requeue()
    except Exception:  # noqa: BLE001 - a lost connection redelivers it anyway
        log.exception("could not requeue on %s", delivery.queue)
    return Outcome.REQUEUED
