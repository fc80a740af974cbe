"""How many of a stage's threads may work at once: a SEDA-style controller.

SEDA's thread-pool controller adds a thread while work waits in the queue
and removes threads that sit idle. Adding threads stops helping once the
stage saturates what it depends on (a region server, a CPU), so a growth is
also judged, in the spirit of gradient concurrency limits: if the window
after it shows lower throughput, or much higher per-message latency for no
real gain, it is undone and growth pauses for a while. With ``slow_start``
the limit doubles, as a TCP window does, until the first growth that does
not pay; from then on it moves one thread at a time.

Pure logic: the caller measures each interval and feeds it to ``observe``.
"""
from __future__ import annotations

import dataclasses

from swarm.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Window:
    """What a stage did over one control interval."""

    seconds: float  # length of the interval
    done: int  # messages finished in it
    busy: float  # thread-seconds spent inside the work function in it
    waiting: int  # deliveries still waiting for a thread at its end

    @property
    def throughput(self) -> float:
        """Messages finished per second."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def latency(self) -> float | None:
        """Seconds of work per message; None when nothing finished."""
        return self.busy / self.done if self.done else None


class ConcurrencyController:
    """Sets how many of a stage's threads may work at once, within [low, high], from queue length and latency."""

    def __init__(
        self,
        low: int,
        high: int,
        start: int | None = None,
        *,
        tolerance: float = 0.1,
        latency_slack: float = 0.5,
        hold: int = 3,
        idle_windows: int = 3,
        slow_start: bool = False,
    ):
        if low < 1:
            raise ConfigError(f"concurrency: low must be >= 1, got low={low}")
        if high < low:
            raise ConfigError(f"concurrency: high must be >= low, got low={low}, high={high}")
        if hold < 0 or idle_windows < 1:
            raise ConfigError(f"concurrency: need hold >= 0 and idle_windows >= 1, got {hold}, {idle_windows}")
        self.low, self.high = low, high
        self.tolerance, self.latency_slack = tolerance, latency_slack
        self.hold, self.idle_windows = hold, idle_windows
        self._limit = max(low, min(high, low if start is None else start))
        self._holding = 0  # windows left in which growth is paused
        self._grew = False  # the last change was a growth not yet judged
        self._from = self._limit  # the limit before that growth
        self._slow = slow_start  # double, not add one, until a growth does not pay
        self._seen: dict[int, Window] = {}  # last backlogged window at each limit
        self._idle = self._underused = 0

    @property
    def limit(self) -> int:
        """Threads that may work at once."""
        return self._limit

    def observe(self, window: Window) -> int:
        """Take one interval's window; return the new limit."""
        holding = self._holding > 0
        self._holding = max(0, self._holding - 1)
        if window.waiting > 0:
            self._backlogged(window, holding)
        else:
            self._no_backlog(window)
        return self._limit

    # with a backlog: grow, or undo a growth that did not pay ---------------

    def _backlogged(self, window: Window, holding: bool) -> None:
        self._idle = self._underused = 0
        grew, self._grew = self._grew, False
        before = self._seen.get(self._from)
        self._seen[self._limit] = window
        if grew and self._slow and not self._scaled(window, before):
            # Doubling overshoots a peak: back to the last level that scaled, then one thread at a time.
            self._limit, self._slow = self._from, False
        elif grew and self._hurt(window, before):
            self._limit = max(self.low, self._limit - 1)
            self._holding = self.hold
        elif not holding and self._limit < self.high:
            self._from = self._limit
            self._limit = min(self.high, self._limit * 2 if self._slow else self._limit + 1)
            self._grew = True

    def _scaled(self, now: Window, before: Window | None) -> bool:
        """True if a growth gained at least half of what perfect scaling would have."""
        if before is None:
            return True
        ideal = before.throughput * (self._limit / self._from - 1)
        return now.throughput - before.throughput >= ideal / 2

    def _hurt(self, now: Window, before: Window | None) -> bool:
        """True if ``now`` (after a growth) is worse than ``before`` (the window that led to it)."""
        if before is None:
            return False
        was, gain = before.throughput, now.throughput - before.throughput
        if gain < -self.tolerance * was:
            return True
        slower = (now.latency is not None and before.latency is not None
                  and now.latency > before.latency * (1 + self.latency_slack))
        return slower and gain < self.tolerance * was

    # without a backlog: shrink after a run of idle or under-used windows -----

    def _no_backlog(self, window: Window) -> None:
        self._grew = False  # a growth is only judged while demand exceeds it
        # Threads stuck in long calls finish nothing in a window yet are not idle.
        idle = window.done == 0 and window.busy <= 0
        underused = window.seconds > 0 and window.busy / window.seconds < self._limit - 1
        self._idle = self._idle + 1 if idle else 0
        self._underused = self._underused + 1 if underused else 0
        if max(self._idle, self._underused) >= self.idle_windows:
            self._limit = max(self.low, self._limit - 1)
            self._slow = False
            self._idle = self._underused = 0
