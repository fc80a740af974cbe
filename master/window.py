"""The master's publishing window: a phase's planned work goes out only as far as its consumers keep up.

Each stage queue gets at most ``limit`` ready messages ahead of its
consumers: the master's ``window`` setting, or the stage's bound
(``max_queue``) if that is smaller; a window of 0 publishes the whole phase
at once (unless a bound says otherwise). ``top_up`` looks at how many are
ready on each queue the phase still has planned work for and publishes what
fits (once a tenth of the limit is free), in plan (id) order, in confirmed
batches; each batch is marked queued
in the ledger only once the broker has confirmed it, so a master killed
anywhere finds the rest still planned and goes on from there. A queue that
refuses messages (``QueueFull``: another publisher filled it meanwhile) is
waited for: its refused messages stay planned for the next top-up.

Messages already queued in the ledger that must go out again (lost,
expired, on a broker new with this process) wait their turn here too
(``again``), ahead of the planned ones; the ledger keeps them queued, so a
master killed meanwhile finds them as before.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from swarm.broker import Broker, stage_queue
from swarm.errors import QueueFull
from swarm.failpoints import failpoint
from swarm.ledger import MasterLedger, Message
from swarm.stage import Job

log = logging.getLogger("swarm.master")

Publish = Callable[[list[Message]], None]


class PublishWindow:
    """One phase's planned work, published a window at a time."""

    def __init__(self, job: Job, run_id: str, phase: str, broker: Broker, ledger: MasterLedger, window: int,
                 batch: int, planned: bool = True, hold: Callable[[], bool] | None = None):
        """``planned``: the phase may still have planned work (its state is ``planned``).

        ``hold``: asked before each batch of the plan; while True, nothing more
        of the plan is published (an operator drains the job). What goes
        again (lost or expired work) is published all the same.
        """
        self.job, self.run_id, self.phase = job, run_id, phase
        self.hold = hold
        self.broker, self.ledger = broker, ledger
        self.window, self.batch = window, batch
        self.planned = planned  # False once nothing of the phase is left planned
        self._backlog: list[Message] = []  # queued in the ledger, to publish again
        self._after = ""  # every planned message up to this id is published: the next top-up reads after it
        self._next: str | None = None  # the stage of the first planned message after it, once a look saw it
        self._full_said: set[str] = set()

    def limit(self, stage: str) -> int | None:
        """Most ready messages the window keeps on ``stage``'s queue; None: no limit."""
        limits = [n for n in (self.window or None, self.job.max_queue(stage)) if n]
        return min(limits) if limits else None

    @property
    def open(self) -> bool:
        """Whether anything waits to be published."""
        return self.planned or bool(self._backlog)

    def again(self, messages: Sequence[Message]) -> None:
        """Queued messages to publish again, ahead of what is planned, at the next ``top_up``."""
        known = {m.id for m in self._backlog}
        self._backlog += [m for m in messages if m.id not in known]

    def top_up(self) -> bool:
        """Publish what fits now; True once nothing of the phase is left planned (or waiting to go again).

        The plan is read only when the queue of its next message has room for
        a tenth of its limit or more: a master looking often costs the ledger
        nothing while a queue is full.
        """
        rooms: dict[str, int | None] = {}
        if self._backlog:
            sent = self._fill(self._backlog, rooms)
            self._backlog = [m for m in self._backlog if m.id not in sent]
        while self.planned:
            limit = self.batch
            if self._next is not None:  # the stage of the next planned message, known from the last look
                room = self._room_in(self._next, rooms)
                if room is not None:
                    if room < max(1, (self.limit(self._next) or 0) // 10):
                        break  # not worth a look at the plan yet
                    limit = min(limit, room)
            if self.hold is not None and self.hold():
                break  # asked only when the plan would be read: a look that costs the ledger a query anyway
            batch = self.ledger.planned(self.run_id, self.phase, limit, after=self._after)
            if not batch:
                self.planned = False
                break
            sent = self._fill(batch, rooms)
            if sent:
                failpoint("master.mid_publish")
                self.ledger.mark_queued([m.id for m in batch if m.id in sent])
            self._next = None
            for m in batch:
                if m.id not in sent:
                    self._next = m.stage
                    break
                self._after = m.id
            if len(sent) < len(batch):
                break  # a queue is at its limit: the rest waits for the next top-up
        return not self.open

    def _fill(self, messages: Sequence[Message], rooms: dict[str, int | None]) -> set[str]:
        """Publish the leading ``messages`` that fit their queues' rooms, in order; the ids published."""
        chosen: list[Message] = []
        for m in messages:
            room = self._room_in(m.stage, rooms)
            if room is not None and room <= 0:
                break  # in plan order: stop at the first that does not fit
            if room is not None:
                rooms[m.stage] = room - 1
            chosen.append(m)
        if not chosen:
            return set()
        try:
            self.broker.publish([(stage_queue(self.job.name, m.stage), m.body) for m in chosen])
        except QueueFull as full:
            for i in full.refused:
                rooms[chosen[i].stage] = 0
            for queue in full.queues:
                if queue not in self._full_said:
                    self._full_said.add(queue)
                    log.info("%s phase %s: queue %s is full; the rest of the phase waits for room", self.run_id,
                             self.phase, queue)
            return {m.id for i, m in enumerate(chosen) if i not in full.refused}
        return {m.id for m in chosen}

    def _room_in(self, stage: str, rooms: dict[str, int | None]) -> int | None:
        """Room on ``stage``'s queue: asked of the broker once a top-up, then counted down in ``rooms``."""
        if stage not in rooms:
            rooms[stage] = self._room(stage)
        return rooms[stage]

    def _room(self, stage: str) -> int | None:
        limit = self.limit(stage)
        if limit is None:
            return None
        return max(0, limit - self.broker.depth(stage_queue(self.job.name, stage), delayed=False))
