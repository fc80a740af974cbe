"""What became of a delivery: the verdicts the message path reaches, and the outcome each settles into.

Each step of the path (``swarm.runtime``) returns a verdict, or None to
go on; ``swarm.settle`` carries a verdict out (a retry, a dead letter, an
abort, an ack) and says its outcome. Errors do not travel as values and
back: the one place that turns an exception into a verdict is ``of_error``.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar, Sequence

from swarm.errors import BackendError, BadMessage, QueueFull
from swarm.errors import Fenced as FencedError
from swarm.ledger import Message


class Outcome(str, enum.Enum):
    """As counted in metrics and returned to callers and tests."""

    DONE = "done"
    SKIPPED = "skipped"
    RETRY = "retry"
    DEAD = "dead"
    ABORTED = "aborted"
    REJECTED = "rejected"
    REQUEUED = "requeued"
    FENCED = "fenced"
    TIMED_OUT = "timed_out"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class Verdict:
    outcome: ClassVar[Outcome]


@dataclasses.dataclass(frozen=True)
class Done(Verdict):
    """Effects applied, recorded done, children confirmed: ack."""

    outcome = Outcome.DONE


@dataclasses.dataclass(frozen=True)
class Skip(Verdict):
    """Nothing to do here: done, dead or aborted already, or another holder's lease is live (look again later),
    or its run was cancelled. ``children``: a done parent's children still queued, published again."""

    outcome = Outcome.SKIPPED
    look_again_after: float | None = None
    children: Sequence[Message] = ()


@dataclasses.dataclass(frozen=True)
class Retry(Verdict):
    """The handler's fault: again after a backoff, or dead-lettered once its attempts are spent."""

    outcome = Outcome.RETRY
    error: str


@dataclasses.dataclass(frozen=True)
class GiveUp(Verdict):
    """Dead-letter it with ``reason`` and record it dead."""

    outcome = Outcome.DEAD
    reason: str


@dataclasses.dataclass(frozen=True)
class Stop(Verdict):
    """Abort: permanent trouble; the message stops and its run will fail with ``reason``."""

    outcome = Outcome.ABORTED
    reason: str


@dataclasses.dataclass(frozen=True)
class Reject(Verdict):
    """Bad input: dead-lettered with ``reason``; recorded dead only when ``authentic`` (its signature checked)."""

    outcome = Outcome.REJECTED
    reason: str
    authentic: bool = False


@dataclasses.dataclass(frozen=True)
class Outage(Verdict):
    """A backend was unreachable: the message waits on a delay queue, its attempt given back."""

    outcome = Outcome.REQUEUED
    error: BackendError


@dataclasses.dataclass(frozen=True)
class Deferred(Verdict):
    """A bounded queue it publishes to is full: it waits on a delay queue, its attempt given back (no fault).

    ``recorded``: it is recorded done already, and only some of its children
    wait to be published; redelivered, it publishes them (``Skip.children``).
    """

    outcome = Outcome.REQUEUED
    error: QueueFull
    recorded: bool = False


@dataclasses.dataclass(frozen=True)
class Unexpected(Verdict):
    """An error of Swarm's own: back to the queue, logged with its traceback."""

    outcome = Outcome.REQUEUED
    error: BaseException


@dataclasses.dataclass(frozen=True)
class HandBack(Verdict):
    """Claimed, but its handler never started (the watchdog took its batch back): on the queue again."""

    outcome = Outcome.REQUEUED


@dataclasses.dataclass(frozen=True)
class Fenced(Verdict):
    """Its lease was taken over: the new holder finishes it; ack this copy."""

    outcome = Outcome.FENCED


@dataclasses.dataclass(frozen=True)
class LeaseLost(Verdict):
    """Its lease may have ended before its table writes (the ledger was out of reach, or took it over): nothing
    is written, and this copy is looked at again once the lease can have run out, by whoever holds it then."""

    outcome = Outcome.FENCED
    look_again_after: float


@dataclasses.dataclass(frozen=True)
class TimedOut(Verdict):
    """The watchdog has settled it already (a retry): the late result is dropped."""

    outcome = Outcome.TIMED_OUT


@dataclasses.dataclass(frozen=True)
class HandedBack(Verdict):
    """The watchdog has handed it back already, while an earlier handler of its batch hung."""

    outcome = Outcome.REQUEUED


SETTLED_ELSEWHERE = (TimedOut, HandedBack)  # nothing left to do, and counted where they were settled


def of_error(exc: BaseException) -> Verdict:
    """The verdict an error raised on the path stands for."""
    if isinstance(exc, BadMessage):
        return Reject(str(exc), authentic=getattr(exc, "envelope", None) is not None)
    if isinstance(exc, FencedError):
        return Fenced()
    if isinstance(exc, QueueFull):
        return Deferred(exc)
    if isinstance(exc, BackendError):
        return Outage(exc)
    return Unexpected(exc)
