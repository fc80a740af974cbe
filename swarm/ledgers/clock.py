"""The clock of a ledger on a server: the server's time, carried forward by this process's monotonic clock.

Leases, lock expiries and update times are written by workers and read by the
master, on hosts whose clocks may disagree by minutes. Going by one clock, the
database server's, they agree whatever the hosts' clocks say: what is left
to assume is that clocks run at about the same rate between two readings.
The server's time is read once a ``resync`` and in between carried forward by
``time.monotonic``, which a host's clock being set, or stepped by NTP, does not move.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("swarm.ledger")

RESYNC = 60.0  # seconds between readings of the server's time
RETRY = 2.0  # after a reading failed
SKEW_NOTED = 5.0  # seconds off the server's clock that this host's clock may be before a warning says so


class ServerClock:
    """``now()``: the server's time in epoch seconds, as well as a round trip can tell it."""

    def __init__(self, read_server: Callable[[], float], resync: float = RESYNC, retry: float = RETRY,
                 monotonic: Callable[[], float] = time.monotonic, local: Callable[[], float] = time.time):
        """``read_server``: one reading of the server's time, raising when the server cannot be reached."""
        self._read_server, self._resync, self._retry = read_server, resync, retry
        self._monotonic, self._local = monotonic, local
        self._offset: float | None = None  # server time minus monotonic time
        self._next = -float("inf")
        self._lock = threading.Lock()
        self._skew_noted = False

    def now(self) -> float:
        if self._monotonic() >= self._next:
            self._sync()
        offset = self._offset
        if offset is None:
            return self._local()  # never read yet (the server is out of reach): the calls after fail anyway
        return offset + self._monotonic()

    @property
    def offset(self) -> float | None:
        """Seconds the server's clock is ahead of this host's, at the last reading; None before the first."""
        if self._offset is None:
            return None
        return self._offset + self._monotonic() - self._local()

    def _sync(self) -> None:
        with self._lock:
            if self._monotonic() < self._next:
                return  # another thread has just read it
            before = self._monotonic()
            try:
                server = self._read_server()
            except Exception as exc:  # noqa: BLE001 - the old reading serves until the server answers again
                log.debug("could not read the ledger server's clock: %s", exc)
                self._next = self._monotonic() + self._retry
                return
            after = self._monotonic()
            self._offset = server - (before + after) / 2  # the reply left the server about halfway through
            self._next = after + self._resync
        self._note_skew()

    def _note_skew(self) -> None:
        skew = self.offset
        if skew is not None and abs(skew) > SKEW_NOTED and not self._skew_noted:
            self._skew_noted = True
            log.warning("this host's clock is %.0f s %s the ledger server's: leases and times go by the server's",
                        abs(skew), "behind" if skew > 0 else "ahead of")
