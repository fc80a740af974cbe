"""The ledger role: runs, the checkpointed plan, progress, dedup and history."""
from __future__ import annotations

import abc
import dataclasses
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

from swarm.errors import BackendError, Fenced

# Run states
RUNNING, DONE, FAILED = "running", "done", "failed"
# Phase states, in order
PLANNED, PUBLISHED, PHASE_DONE = "planned", "published", "done"
# Message states. planned: in the checkpoint, not yet published; queued: on
# the broker; claimed: a worker holds a lease; then one of the terminal states.
M_PLANNED, M_QUEUED, M_CLAIMED, M_DONE, M_DEAD, M_ABORTED = (
    "planned", "queued", "claimed", "done", "dead", "aborted",
)
TERMINAL = (M_DONE, M_DEAD, M_ABORTED)


@dataclasses.dataclass(frozen=True)
class Run:
    id: str
    job: str
    params: Mapping[str, Any]
    status: str
    phase: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None


@dataclasses.dataclass(frozen=True)
class Message:
    """A message as the ledger records it: enough to publish it again."""

    id: str
    stage: str
    chunk: str
    body: bytes


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outcome of claiming a message.

    ``token`` is the fencing token: only the holder of the latest token may
    complete or release the message. ``state`` is set instead when the
    message must not be processed (already done, dead, or held by a live lease).
    """

    token: int | None
    attempts: int
    state: str | None = None

    @property
    def granted(self) -> bool:
        return self.token is not None


ClaimCall = tuple[str, str, Message]  # run_id, phase, message
CompleteCall = tuple[str, int, str, str, Sequence[Message], Mapping[str, int]]


def _outcome(call: Callable[[], Any]) -> Any:
    """A batch member's result, or the ledger error it raised."""
    try:
        return call()
    except (Fenced, BackendError) as exc:
        return exc


@dataclasses.dataclass(frozen=True)
class Failure:
    id: str
    stage: str
    chunk: str
    state: str
    attempts: int
    error: str | None
    updated_at: float


@dataclasses.dataclass(frozen=True)
class DeadLetterRecord:
    id: int
    queue: str
    message_id: str | None
    reason: str
    body: bytes
    created_at: float
    replayed_at: float | None


class Ledger(abc.ABC):
    """Durable state shared by the master and the workers.

    Implementations: ``swarm.ledgers.sqlite`` (embedded default) and
    ``swarm.ledgers.mysql``. Every method is one short transaction and is
    safe to call from several threads.
    """

    @staticmethod
    def now() -> float:
        return time.time()

    # schema -----------------------------------------------------------------
    @abc.abstractmethod
    def init_schema(self) -> None:
        """Create or migrate the tables; idempotent."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending schema steps; returns their numbers."""

    # runs -------------------------------------------------------------------
    @abc.abstractmethod
    def open_run(self, run_id: str, job: str, params: Mapping[str, Any]) -> Run:
        """Return the run, creating it (status running) if new."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run | None: ...

    @abc.abstractmethod
    def runs(
        self,
        job: str | None = None,
        status: str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs newest first, filtered; ``text`` matches inside the error."""

    @abc.abstractmethod
    def update_run(
        self, run_id: str, *, status: str | None = None, phase: str | None = None,
        error: str | None = None, finished: bool = False,
    ) -> None: ...

    @abc.abstractmethod
    def phase_state(self, run_id: str, phase: str) -> str | None: ...

    @abc.abstractmethod
    def set_phase_state(self, run_id: str, phase: str, state: str) -> None: ...

    # the master's lock --------------------------------------------------------
    @abc.abstractmethod
    def lock_master(self, key: str, holder: str) -> None:
        """Take the one-master lock for ``key`` or raise ``MasterLocked`` naming the holder."""

    @abc.abstractmethod
    def unlock_master(self, key: str) -> None: ...

    # the plan (the master's checkpoint) ---------------------------------------
    @abc.abstractmethod
    def save_plan(self, run_id: str, phase: str, messages: Sequence[Message]) -> None:
        """Record a phase's root messages (state planned) and mark the phase planned, atomically."""

    @abc.abstractmethod
    def planned(self, run_id: str, phase: str, limit: int, after: str = "") -> list[Message]:
        """Root messages of the phase not yet published, in id order, with ids after ``after``."""

    @abc.abstractmethod
    def mark_queued(self, ids: Sequence[str]) -> None:
        """Planned messages are now on the broker."""

    # workers ----------------------------------------------------------------
    @abc.abstractmethod
    def claim(self, run_id: str, phase: str, msg: Message, holder: str, lease: float) -> Claim:
        """Take a lease on a message, recording it if the ledger has not seen it.

        Refused (``Claim.state`` set) when the message is terminal or another
        holder's lease is still live. Each grant counts one attempt.
        """

    @abc.abstractmethod
    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> None:
        """Extend the leases ``(id, token)`` still held."""

    @abc.abstractmethod
    def complete(
        self, msg_id: str, token: int, run_id: str, phase: str,
        children: Sequence[Message], counts: Mapping[str, int],
    ) -> None:
        """Mark done, record children (queued) and counts, atomically; ``Fenced`` if the token is stale."""

    def claim_batch(self, calls: Sequence[ClaimCall], holder: str, lease: float) -> list[Claim | BackendError]:
        """``claim`` for each ``(run_id, phase, msg)``; a call's ``BackendError`` is its outcome, not raised."""
        return [_outcome(lambda c=call: self.claim(*c, holder, lease)) for call in calls]

    def complete_batch(self, calls: Sequence[CompleteCall]) -> list[Fenced | BackendError | None]:
        """``complete`` for each ``(msg_id, token, run_id, phase, children, counts)``; None where it succeeded."""
        return [_outcome(lambda c=call: self.complete(*c)) for call in calls]

    @abc.abstractmethod
    def release(self, msg_id: str, token: int, state: str, error: str | None) -> None:
        """End a lease: ``queued`` for a retry, or terminal ``dead``/``aborted``; ``Fenced`` if stale."""

    @abc.abstractmethod
    def reject(self, msg_id: str, reason: str) -> bool:
        """A known, unfinished message that can never run (bad input): dead with ``reason``.

        Ids the ledger has never seen are left alone, so stray messages on a
        queue cannot change a run. True if a message was marked.
        """

    # the master's watch ---------------------------------------------------------
    @abc.abstractmethod
    def counts(self, run_id: str, phase: str | None = None) -> dict[str, int]:
        """Messages per state."""

    @abc.abstractmethod
    def reclaim_expired(self, run_id: str, now: float) -> list[Message]:
        """Claimed messages whose lease ran out: set back to queued, returned for re-publishing."""

    @abc.abstractmethod
    def stale_queued(self, run_id: str, older_than: float) -> list[Message]:
        """Queued messages untouched since ``older_than``; touched now, returned for re-publishing."""

    @abc.abstractmethod
    def failures(self, run_id: str, limit: int = 100) -> list[Failure]:
        """Messages that are dead or aborted, or have a recorded error."""

    @abc.abstractmethod
    def counters(self, run_id: str) -> dict[str, int]:
        """Sum of ``Count`` effects over the run's done messages."""

    @abc.abstractmethod
    def chunk_counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Per phase, messages per state (for status)."""

    @abc.abstractmethod
    def done_since(self, run_id: str, since: float) -> dict[str, int]:
        """Per stage, messages finished since ``since`` (for rates)."""

    # dead letters ---------------------------------------------------------------
    @abc.abstractmethod
    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None) -> int: ...

    @abc.abstractmethod
    def dead_letters(self, queue: str | None = None, replayed: bool = False, limit: int = 1000) -> list[DeadLetterRecord]: ...

    @abc.abstractmethod
    def get_dead_letter(self, dl_id: int) -> DeadLetterRecord | None: ...

    @abc.abstractmethod
    def mark_replayed(self, ids: Iterable[int]) -> None: ...

    @abc.abstractmethod
    def revive(self, msg_id: str) -> None:
        """Before a replay: a dead message goes back to queued with its attempts reset."""

    def close(self) -> None:
        """Release connections."""
