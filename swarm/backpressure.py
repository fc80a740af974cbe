"""Backpressure: what a worker does when a bounded queue it publishes to is full.

A stage's children are published once its messages are recorded done. A
successor whose queue is bounded (``max_queue``) and full refuses some of
them (``QueueFull``); nothing is lost, and no attempt is spent:

1. The publish waits and offers the refused children again, backing off
   from ``WAIT_FIRST`` to ``WAIT_CAP`` seconds, for up to ``patience``
   seconds. The thread takes no new work meanwhile: the producer slows to
   the pace at which its successor drains. ``WAIT_CAP`` is short so that a
   successor draining its queue is refilled before it runs dry.
2. If the queue is still full then (the successor is stalled, not just
   slower), what is still refused stays recorded in the ledger as queued,
   and each parent whose children are not all published is handed back on
   its delay queue (``swarm.settle``), its attempt given back. Redelivered,
   it finds itself done and publishes those children again
   (``swarm.runtime``). The delay grows while the queue stays full, up to
   ``PAUSE_CAP``.
3. For ``cool_down`` seconds after parents were last handed back for a
   queue, the stages that send to it work on ``pool_min`` threads, their
   prefetch following (``workers.worker`` applies it): fewer of their
   messages wait in the worker, and fewer go round the delay queue.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Iterable, Sequence

from swarm.errors import QueueFull

log = logging.getLogger("swarm.worker")

WAIT_FIRST, WAIT_CAP = 0.02, 0.25  # seconds between offers of refused messages, doubling
PATIENCE = 5.0  # seconds a publish keeps offering them before their parents are handed back
COOL_DOWN = 5.0  # seconds after parents were last handed back for a queue: the stages feeding it on pool_min
PAUSE_FIRST, PAUSE_CAP = 1.0, 30.0  # a handed-back parent's delay, growing while its queue stays full

Publish = Callable[[Sequence[tuple[str, bytes]]], None]


class Backpressure:
    """Which bounded queues refused messages lately, and a publish that waits for them; thread safe."""

    def __init__(self, patience: float = PATIENCE, cool_down: float = COOL_DOWN,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.patience, self.cool_down = patience, cool_down
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # queue -> when it began refusing (this time)
        self._last: dict[str, float] = {}  # queue -> when it last refused
        self._gave_up: dict[str, float] = {}  # queue -> when a publish last ran out of patience with it

    def publish(self, publish: Publish, messages: Sequence[tuple[str, bytes]],
                on_full: Callable[[QueueFull], None] | None = None) -> None:
        """``publish(messages)``, offering what full queues refuse again until ``patience`` runs out.

        Then ``QueueFull``, whose ``refused`` are indexes into ``messages``;
        the others are published. ``on_full`` hears each refusal.
        """
        pending = list(range(len(messages)))
        deadline = self._clock() + self.patience
        wait = WAIT_FIRST
        while True:
            try:
                publish([messages[i] for i in pending])
            except QueueFull as exc:
                pending = [pending[j] for j in sorted(exc.refused)]
                self.refused(exc.queues)
                if on_full is not None:
                    on_full(exc)
                if not pending or self._clock() + wait > deadline:
                    self._gave_up_on(exc.queues)
                    raise QueueFull(exc.queues, pending, str(exc)) from None
                self._sleep(wait)
                wait = min(WAIT_CAP, wait * 2)
            else:
                return

    def refused(self, queues: Iterable[str]) -> None:
        """Queues that refused messages just now."""
        now = self._clock()
        with self._lock:
            for queue in queues:
                if not self._refusing(queue, now):
                    self._since[queue] = now
                    log.info("queue %s is full: publishes to it wait (backpressure)", queue)
                self._last[queue] = now

    def cooling(self, queues: Iterable[str]) -> bool:
        """Whether a publish ran out of patience with any of ``queues`` within the last ``cool_down`` seconds."""
        now = self._clock()
        with self._lock:
            return any(now - self._gave_up.get(q, -self.cool_down) < self.cool_down for q in queues)

    def _gave_up_on(self, queues: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            for queue in queues:
                self._gave_up[queue] = now

    def pause(self, queues: Iterable[str]) -> float:
        """How long a handed-back parent waits: longer the longer ``queues`` have been refusing."""
        now = self._clock()
        with self._lock:
            began = [self._since[q] for q in queues if q in self._since and self._refusing(q, now)]
        age = now - min(began) if began else 0.0
        return min(PAUSE_CAP, max(PAUSE_FIRST, age / 4))

    def _refusing(self, queue: str, now: float) -> bool:
        """Whether ``queue`` refused within ``cool_down`` seconds: the same streak of refusals."""
        last = self._last.get(queue)
        return last is not None and now - last < self.cool_down
