"""What the ledger records, as plain data: runs, messages, claims, checks, publications, dead letters.

The ledger's interfaces (``swarm.ledger``) take and return these; every
name here is also importable from ``swarm.ledger``.
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
from typing import Any, Mapping, Sequence


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"  # and, for a job with checks or published tables, its result published
    FAILED = "failed"
    CANCELLED = "cancelled"
    HELD = "held"  # finished, but a check failed: its result waits for ``swarm publish`` or ``swarm reject``
    REJECTED = "rejected"  # held, then rejected by an operator: its result is never published


class PhaseState(enum.StrEnum):
    """A phase's progress, in this order."""

    PLANNED = "planned"  # its root messages are in the checkpoint
    PUBLISHED = "published"  # and all on the broker
    DONE = "done"  # and all finished: the barrier is passed


class MessageState(enum.StrEnum):
    PLANNED = "planned"  # in the checkpoint, not yet published
    QUEUED = "queued"  # on the broker
    CLAIMED = "claimed"  # a worker holds a lease
    DONE = "done"
    DEAD = "dead"
    ABORTED = "aborted"

    @property
    def terminal(self) -> bool:
        """Finished one way or another: no worker takes it again (unless a dead one is revived)."""
        return self in (MessageState.DONE, MessageState.DEAD, MessageState.ABORTED)


class Refusal(enum.StrEnum):
    """Why a claim is refused when the message itself is not the reason.

    Only planned work runs, so these deliveries are rejected and change nothing.
    """

    UNPLANNED = "unplanned"  # no message with this id: neither the master's plan nor a parent declared it
    MISMATCH = "mismatch"  # a message with this id, but another body: a stale or altered copy
    RUN_ENDED = "run-ended"  # the message's run is not running (``Claim.detail`` says what it is)


def body_digest(body: bytes) -> str:
    """What the ledger keeps of a message's body to recognise a copy of it: hex SHA-256, 32 digits."""
    return hashlib.sha256(body).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Run:
    id: str
    job: str
    params: Mapping[str, Any]
    status: RunStatus
    phase: str | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None
    spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # a rerun's plan (``master.rerun``)

    @property
    def reads(self) -> Mapping[str, str]:
        """Per phase this run does not run itself, the run whose output of it this run reads."""
        reads: Mapping[str, str] = self.spec.get("reads", {})
        return reads


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """One check of a run's result: what was measured, what was expected, within what tolerance."""

    name: str
    passed: bool
    measured: float | None = None
    expected: float | None = None
    tolerance: str = ""
    detail: str = ""


class PublishState(enum.StrEnum):
    PUBLISHING = "publishing"  # the promotion of a run's staged result has begun
    PUBLISHED = "published"  # and finished: readers see exactly that run's result


@dataclasses.dataclass(frozen=True)
class Publication:
    """Which run's result a night (its first run's id) shows readers, or is being promoted to show."""

    night: str
    job: str
    run_id: str
    state: PublishState
    previous: str | None  # the run published before, whose rows the promotion replaces
    updated_at: float


@dataclasses.dataclass(frozen=True)
class Decision:
    """An operator's action on a run (``publish``, ``reject``), with the reason given."""

    run_id: str
    action: str
    reason: str
    at: float


@dataclasses.dataclass(frozen=True)
class Message:
    """A message as the ledger records it: enough to publish it again."""

    id: str
    stage: str
    chunk: str
    body: bytes


@dataclasses.dataclass(frozen=True)
class Recorded:
    """A message as a run recorded it, with its state and its parent's stage (None for a root)."""

    message: Message
    state: MessageState
    parent_stage: str | None


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outcome of claiming a message.

    ``token`` is the fencing token: only the holder of the latest token may
    complete or release the message. ``state`` is set instead when the
    message must not be processed: its own state (done, dead, aborted, or
    claimed under a live lease), or a ``Refusal`` (``RUN_ENDED`` with the
    run's status in ``detail``).
    """

    token: int | None
    attempts: int
    state: MessageState | Refusal | None = None
    detail: str | None = None

    @property
    def granted(self) -> bool:
        return self.token is not None


@dataclasses.dataclass(frozen=True)
class ClaimRequest:
    """A delivery to take a lease on: its message as it arrived, in the run and phase its envelope names."""

    run_id: str
    phase: str
    message: Message


@dataclasses.dataclass(frozen=True)
class Completion:
    """A claimed message's results, recorded with it done; ``token`` is the lease's fencing token."""

    message_id: str
    token: int
    run_id: str
    phase: str
    children: Sequence[Message] = ()  # recorded queued, with this message as their parent
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Failure:
    id: str
    stage: str
    chunk: str
    state: MessageState
    attempts: int
    error: str | None
    updated_at: float


@dataclasses.dataclass(frozen=True)
class DeadLetterRecord:
    id: int
    queue: str
    message_id: str | None
    reason: str
    body: bytes  # the first MAX_DEAD_LETTER_BYTES of it
    created_at: float
    replayed_at: float | None
    size: int  # of the whole body
    sha256: str  # of the whole body, hex

    @property
    def truncated(self) -> bool:
        return self.size > len(self.body)


@dataclasses.dataclass(frozen=True)
class Pruned:
    """What ``prune`` deleted (or would delete)."""

    runs: list[str]
    messages: int
    dead_letters: int
    kept: list[str] = dataclasses.field(default_factory=list)  # of ``runs``: their run rows stay, messages go


class ControlState(enum.StrEnum):
    """What an operator has put in force on a job, a stage or the fleet (``swarm ctl``)."""

    PAUSED = "paused"  # the stage (or every stage of the job) takes no new work
    DRAINING = "draining"  # the job's masters publish no new work; the workers finish what is queued
    RELOAD = "reload"  # not a state: its generation counts the requests to re-read the config file


FLEET = ""  # ``Control.job`` of a fleet-wide control (a reload of every worker)
EVERY_STAGE = ""  # ``Control.stage`` of a control on every stage of its job


@dataclasses.dataclass(frozen=True)
class Control:
    """One control in force: ``swarm_controls``'s row."""

    job: str  # ``FLEET``: every job
    stage: str  # ``EVERY_STAGE``: every stage of the job
    state: ControlState
    generation: int  # raised each time it is set: workers watch it for reloads
    updated_at: float
    issued_by: str
    reason: str
