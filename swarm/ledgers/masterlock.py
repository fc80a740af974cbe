"""The master's lock on MySQL: a ``GET_LOCK`` held by a session of its own, kept busy by a thread of its own,
and given up by the master before the server can give it to another master.

The server ends a session that stays silent for ``lock_timeout`` seconds (the
session's ``wait_timeout``), and the lock with it: a master cut off from the
database, or frozen, loses its lock within that time rather than hours later,
and another master can take the night over. The keeper thread asks the server
every quarter of that time whether the session still holds the lock. The
master acts only while the last confirmation it sent is younger than
``ACT_WITHIN`` of ``lock_timeout``: by the time the server can end the session,
the master has stopped (every transaction of its ledger looks first).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Callable

from pymysql.connections import Connection

from swarm.ledgers.core import close_quietly

log = logging.getLogger("swarm.ledger")

ACT_WITHIN = 2 / 3  # of lock_timeout: how old the last confirmation may be for the master to act


@dataclasses.dataclass(eq=False)
class HeldLock:
    """A master's lock: the session that holds it, the holder it names, and when it was last confirmed."""

    conn: Connection
    name: str  # the lock's name on the server
    holder: str  # host:pid:who, as swarm_locks and MasterLocked name it
    key: str
    who: str  # what lock_master was called with
    timeout: float  # lock_timeout
    confirmed: float  # time.monotonic() when the last confirmation that it held was sent
    session: int = 0  # the server's id of the session that holds it (CONNECTION_ID())
    lost: bool = False  # its session no longer holds it, or may not: given up, to be taken again
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    asking: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # one query at a time on conn
    _noted: bool = False

    def holds(self, now: float) -> bool:
        """Whether the master may still act on it: not lost, and confirmed recently enough."""
        return not self.lost and now - self.confirmed < self.timeout * ACT_WITHIN

    def confirm(self, ask: Callable[[HeldLock], bool]) -> bool:
        """Ask the server now whether the session still holds it; raises what asking raised."""
        with self.asking:
            if self.lost:
                return False
            sent = time.monotonic()
            still = ask(self)
            if still:
                self.confirmed = max(self.confirmed, sent)
            return still

    def keep(self, ask: Callable[[HeldLock], bool]) -> None:
        """Confirm it every quarter of ``timeout`` on a thread of its own, until ``stop``."""
        threading.Thread(target=self._keep, args=(ask,), name="swarm-master-lock", daemon=True).start()

    def stop(self) -> None:
        """Stop confirming it (its connection stays, for releasing the lock)."""
        self._stop.set()

    def give_up(self, why: str | None = None) -> None:
        """Lost or not sure: stop, and close its connection, which ends the session when the server hears it.

        Closed now, or by the keeper once the call it is in returns: closing under
        a blocked read would wait for that read's time-out.
        """
        if why is not None:
            self._note(why)
        self.lost = True
        self._stop.set()
        if self.asking.acquire(blocking=False):
            try:
                close_quietly(self.conn)
            finally:
                self.asking.release()

    def _keep(self, ask: Callable[[HeldLock], bool]) -> None:
        every = max(0.2, self.timeout / 4)
        while not self._stop.wait(every):
            try:
                if not self.confirm(ask):
                    self._note("the server says its session no longer holds it")
                    self.lost = True
                    break
            except Exception as exc:  # noqa: BLE001 - out of reach: the master's next look decides
                log.debug("the master's lock on %s: its session is out of reach: %s", self.key, exc)
        if self.lost:
            with self.asking:
                close_quietly(self.conn)

    def _note(self, why: str) -> None:
        if not self._noted:
            self._noted = True
            log.warning("the master's lock on %s is no longer sure (%s): this master acts on it no more until it "
                        "holds it again", self.key, why)
