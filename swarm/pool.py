"""A stage's event queue and bounded thread pool, SEDA style.

The broker's I/O thread puts deliveries on the queue; the pool's threads
take whatever is waiting, up to ``batch`` at a time, and at most ``limit``
of them work at once. The limit is the controller's to move between
windows; the threads above it simply wait. A cap (``cap``) holds the limit
lower for a while whatever the controller says (a full successor, see
``swarm.backpressure``); the controller is not fed meanwhile. A paused pool
(``pause``) takes no new batches: its threads finish what they hold, and
deliveries waiting, or put while it is paused, go to the pause's ``hand_back``.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable

from swarm.control import ConcurrencyController, Window
from swarm.errors import ConfigError
from swarm.flow import STUCK_WINDOWS

if TYPE_CHECKING:
    from swarm.broker import Delivery

log = logging.getLogger("swarm.worker")
HandBack = Callable[[list["Delivery"]], None]  # takes deliveries a paused pool will not start


class StagePool:
    """One stage's event queue and bounded thread pool; threads take batches of waiting deliveries."""

    def __init__(
        self,
        name: str,
        work: Callable[[list[Delivery]], object],
        threads: int,
        batch: int = 1,
        controller: ConcurrencyController | None = None,
        on_limit: Callable[[int], None] | None = None,
        *,
        min_done: int = 0,
        max_window: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if threads < 1 or batch < 1:
            raise ConfigError(f"stage {name}: pool threads and batch must be >= 1, got {threads} and {batch}")
        self.name, self.work, self.threads, self.batch = name, work, threads, batch
        self.controller, self.on_limit, self.clock = controller, on_limit, clock
        # A backlogged window is judged once it holds min_done completions or has lasted max_window.
        self.min_done, self.max_window = min_done, max_window
        self._limit = controller.limit if controller else threads
        self._cap: int | None = None
        self._queue: collections.deque[Delivery] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._working: dict[int, float] = {}  # thread index -> start of its not yet counted busy time
        self._since, self._done, self._busy = clock(), 0, 0.0
        self._threads: list[threading.Thread] = []
        self._hand_back: HandBack | None = None  # set while paused

    def start(self) -> None:
        """Start the threads; ``on_limit`` hears the starting limit."""
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, args=(i,), name=f"swarm-{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._tell(self._limit)

    def put(self, delivery: Delivery) -> None:
        """Queue a delivery; never blocks (the broker's prefetch bounds the queue). Paused: handed back."""
        with self._cond:
            hand_back = self._hand_back
            if hand_back is None:
                self._queue.append(delivery)
                self._cond.notify()
                return
        hand_back([delivery])

    def pause(self, hand_back: HandBack) -> int:
        """Take no new batches; what waits now, and what is put until ``resume``, goes to ``hand_back``.

        Threads working on a batch finish it. Returns how many were handed back now.
        """
        with self._cond:
            self._hand_back = hand_back
            waiting = list(self._queue)
            self._queue.clear()
        if waiting:
            hand_back(waiting)
        return len(waiting)

    def resume(self) -> None:
        """Take batches again, of what is put from now on."""
        with self._cond:
            self._hand_back = None
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._hand_back is not None

    def shutdown(self, wait: bool = True) -> None:
        """Let the threads drain what was put, then exit; join them if ``wait``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    @property
    def limit(self) -> int:
        """Threads allowed to work at once."""
        return self._limit if self._cap is None else min(self._limit, self._cap)

    def cap(self, limit: int | None) -> None:
        """Hold the stage to at most ``limit`` working threads (None: lift the cap); ``on_limit`` hears the change."""
        with self._cond:
            if limit == self._cap:
                return
            before, self._cap = self.limit, limit
            self._cond.notify_all()
            if limit is None:
                self._reset_window()  # the controller judges from here, not the capped time
        if self.limit != before:
            self._tell(self.limit)

    @property
    def waiting(self) -> int:
        """Deliveries put and not yet taken by a thread."""
        return len(self._queue)

    def window(self) -> Window:
        """Statistics since the previous call; resets them."""
        with self._cond:
            return self._reset_window()

    def _reset_window(self) -> Window:
        now = self.clock()
        # Calls still running count up to now, so long calls do not look idle.
        busy = self._busy + sum(now - started for started in self._working.values())
        window = Window(now - self._since, self._done, busy, len(self._queue))
        self._working = dict.fromkeys(self._working, now)
        self._since, self._done, self._busy = now, 0, 0.0
        return window

    def adjust(self) -> int:
        """Feed the last window to the controller and apply its limit; returns the limit."""
        if self.controller is None or self._cap is not None or self._too_soon():
            return self.limit
        window = self.window()
        before, limit = self._limit, self.controller.observe(window)
        with self._cond:
            grew, changed, self._limit = limit > self._limit, limit != self._limit, limit
            if grew:
                self._cond.notify_all()
        if changed:
            latency = window.latency * 1000 if window.latency is not None else 0.0
            log.debug("stage %s: %d -> %d threads (%.0f msgs/s, %.1f ms busy a message, %d waiting)",
                     self.name, before, limit, window.throughput, latency, window.waiting)
            self._tell(limit)
        return limit

    def _too_soon(self) -> bool:
        """A backlogged window with few completions says little about throughput yet: let it run on.

        It is judged once it holds ``min_done`` completions, or has lasted
        ``max_window`` with a completion per working thread (so handlers that
        take minutes get windows of minutes), or has lasted ``STUCK_WINDOWS``
        times ``max_window`` whatever it holds: threads stuck in hung handlers
        must not keep the limit where it is for ever.
        """
        with self._cond:
            if not self._queue or self._done >= self.min_done:
                return False
            lasted = self.clock() - self._since
            if lasted >= self.max_window and self._done >= self._limit:
                return False
            return lasted < self.max_window * STUCK_WINDOWS

    # the threads ----------------------------------------------------------------

    def _loop(self, index: int) -> None:
        while (batch := self._take(index)) is not None:
            try:
                self.work(batch)
            except Exception:  # noqa: BLE001 - the work function must not cost the stage a thread
                log.exception("stage %s: work function raised on a batch of %d", self.name, len(batch))
            self._finish(index, len(batch))

    def _take(self, index: int) -> list[Delivery] | None:
        """Wait for waiting deliveries and a free slot under the limit; None once closed and drained."""
        with self._cond:
            while not (self._queue and len(self._working) < self.limit):
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            batch = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            self._working[index] = self.clock()
            if self._closed and not self._queue:
                self._cond.notify_all()  # the others may exit now
            return batch

    def _finish(self, index: int, done: int) -> None:
        with self._cond:
            self._busy += self.clock() - self._working.pop(index)
            self._done += done
            self._cond.notify()  # one slot came free

    def _tell(self, limit: int) -> None:
        if self.on_limit is not None:
            try:
                self.on_limit(limit)
            except Exception:  # noqa: BLE001 - a gauge must not stop the stage
                log.exception("stage %s: on_limit callback raised", self.name)
