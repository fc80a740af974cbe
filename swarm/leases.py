"""The messages a worker holds: their leases, which it renews, and their handlers' deadlines, which its
watchdog enforces. The worker owns one ``Leases``; the message path registers what it claims there.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from typing import Iterator, Sequence

from swarm.broker import Delivery
from swarm.envelope import Envelope
from swarm.stage import Stage


@dataclasses.dataclass(eq=False)
class InFlight:
    """A claimed message, as the lease renewer and the watchdog see it."""

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
    # By this process's monotonic clock: when the lease may end in the ledger's eyes, at the earliest. A claim or
    # renewal sent at t makes the ledger hold the lease until at least t + lease; -inf once the ledger says it is lost.
    held_until: float = math.inf

    def holds(self, now: float, margin: float) -> bool:
        """Whether the lease surely lasts ``margin`` seconds more, as this worker last heard from the ledger."""
        return self.held_until - now >= margin

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


class Leases:
    """What is held, by message id: renewed while held, watched for handlers past their deadline."""

    def __init__(self) -> None:
        self._held: dict[str, InFlight] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def holding(self, flights: Sequence[InFlight]) -> Iterator[None]:
        """Hold ``flights`` for the block: their leases renewed, their handlers watched."""
        with self._lock:
            for flight in flights:
                self._held[flight.env.id] = flight
        try:
            yield
        finally:
            with self._lock:
                for flight in flights:
                    self._held.pop(flight.env.id, None)

    def renewable(self) -> list[tuple[str, int]]:
        """``(message id, token)`` of every lease held, settled or not.

        A message whose handler has returned is settled, but its batch commits
        only after the batch's last handler: its lease is kept until then.
        Renewing one the watchdog has handed back changes nothing (the ledger
        renews only a claim that still holds that token).
        """
        with self._lock:
            return [(f.env.id, f.token) for f in self._held.values()]

    def renewed(self, asked: Sequence[tuple[str, int]], kept: set[str], until: float) -> None:
        """After a renewal of ``asked``, sent when ``until - lease`` was now: ``kept`` hold until ``until``, the
        others are lost (taken over, or ended). Those no longer held by this very claim are left alone."""
        with self._lock:
            for msg_id, token in asked:
                flight = self._held.get(msg_id)
                if flight is not None and flight.token == token:
                    flight.held_until = until if msg_id in kept else -math.inf

    def overdue(self, now: float) -> list[InFlight]:
        """Flights whose handler has run past its stage's timeout (a deadline is infinite until the handler starts)."""
        with self._lock:
            return [f for f in self._held.values() if f.deadline <= now and not f.settled]
