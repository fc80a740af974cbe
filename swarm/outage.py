"""Backend outages as a worker sees them: said once when they start and once when they end.

While a backend (the broker, the ledger, the tables) is unreachable, every
message that meets it goes round a delay queue without spending a retry.
Logging each of them would bury the one line that matters; this keeps
count instead and reports the outage's length and the messages that waited.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

from swarm.errors import BackendError, clip

PAUSE_CAP = 60.0  # the longest a message waits before it looks again, however long the outage


@dataclasses.dataclass
class _Outage:
    started: float
    waited: int = 0


class Outages:
    """The outages in progress, one per backend (named by its errors' first words)."""

    def __init__(self, log: logging.Logger, clock: Callable[[], float] = time.monotonic):
        self._log, self._clock = log, clock
        self._lock = threading.Lock()
        self._open: dict[str, _Outage] = {}

    def failed(self, exc: BackendError) -> float:
        """Count a message that met an outage of ``exc``'s backend; the outage's age in seconds."""
        backend = backend_of(exc)
        now = self._clock()
        with self._lock:
            first = backend not in self._open
            outage = self._open.setdefault(backend, _Outage(now))
            outage.waited += 1
        if first:
            self._log.error("%s is unreachable (%s); messages wait on delay queues until it is back, without "
                            "spending their retries", backend, clip(str(exc), 300))
        return now - outage.started

    def recovered(self) -> None:
        """A batch went all the way: every outage in progress is over."""
        if not self._open:  # unlocked peek: the common case costs nothing
            return
        with self._lock:
            ended, self._open = self._open, {}
        for backend, outage in ended.items():
            self._log.warning("%s is back after %.0f s; %d message(s) waited it out", backend,
                              self._clock() - outage.started, outage.waited)

    def pause(self, age: float, least: float) -> float:
        """How long a message waits before it looks again: longer as the outage goes on, within ``PAUSE_CAP``."""
        return min(PAUSE_CAP, max(least, age / 4))


def backend_of(exc: BaseException) -> str:
    """The backend an error names, as its message begins ("HBase at host:9090", "MySQL ledger ...")."""
    head = str(exc).split(": ", 1)[0].strip()
    return head or type(exc).__name__
