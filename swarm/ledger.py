"""The ledger: runs, the checkpointed plan, progress, dedup and history.

One implementation, ``swarm.ledgers.sql.SqlLedger`` (on SQLite or MySQL),
serves every role; each caller is typed with the narrow interface it uses:

- ``WorkerLedger``: claims, leases and completes (``swarm.runtime``, ``workers.worker``);
- ``MasterLedger``: the master's lock, its run and phases, the plan and the
  watch (``master``, ``swarm runs cancel``);
- ``ResultLedger``: a run's checks, the publication of its result, operators' decisions
  (``swarm.publishing``, ``swarm publish``/``reject``);
- ``HistoryLedger``: runs past and present, read only (``swarm status``, ``swarm runs``);
- ``DeadLetterLedger``: dead letters gathered, shown and replayed (``swarm.dlq``);
- ``SchemaLedger``: the schema, and pruning old runs (``swarm db``);
- ``ControlLedger``: what operators put in force on a running fleet (``swarm ctl``);
  every role reads it (``ControlView``): workers pause stages, masters hold back work;
- ``Ledger``: all of them, as ``swarm.backends.open_ledger`` returns it.

What they record, as plain data, is in ``swarm.records``.
"""
from __future__ import annotations

import abc
from typing import Any, Iterable, Mapping, Protocol, Sequence, TypeVar

from swarm.records import (
    EVERY_STAGE,
    FLEET,
    CheckResult,
    Claim,
    ClaimRequest,
    Completion,
    Control,
    ControlState,
    DeadLetterRecord,
    Decision,
    Failure,
    Message,
    MessageState,
    PhaseState,
    Pruned,
    Publication,
    PublishState,
    Recorded,
    Refusal,
    Run,
    RunStatus,
    body_digest,
)

__all__ = [
    "body_digest",
    "CheckResult",
    "Claim",
    "ClaimRequest",
    "Completion",
    "Control",
    "ControlState",
    "DeadLetterRecord",
    "Decision",
    "EVERY_STAGE",
    "FLEET",
    "Failure",
    "Message",
    "MessageState",
    "PhaseState",
    "Pruned",
    "Publication",
    "PublishState",
    "Recorded",
    "Refusal",
    "Run",
    "RunStatus",
]

T = TypeVar("T")


def _raised(outcome: T | Exception) -> T:
    """A batch member's outcome as a single call has it: an error is raised."""
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def known_run(ledger: RunView, run_id: str) -> Run:
    """``run_id``'s run, for a caller that opened or found it; ``LookupError`` if it has gone since (pruned)."""
    run = ledger.get_run(run_id)
    if run is None:
        raise LookupError(f"run {run_id} has gone from the ledger")
    return run


# The interfaces. Every method is one short transaction and is safe to call
# from several threads.


class RunView(Protocol):
    """What the master and the history both read of a run."""

    @abc.abstractmethod
    def now(self) -> float:
        """The ledger's clock, which lease ends and update times go by."""

    @abc.abstractmethod
    def get_run(self, run_id: str) -> Run | None: ...

    @abc.abstractmethod
    def failures(self, run_id: str, limit: int = 100, recovered: bool | None = None) -> list[Failure]:
        """Messages that are dead or aborted, or have a recorded error, latest first.

        ``recovered`` True: only those done in the end (the error is the last
        one before it succeeded); False: only the others (dead, aborted, or
        still to be retried); None: both.
        """

    @abc.abstractmethod
    def counters(self, run_id: str) -> dict[str, int]:
        """Sum of ``Count`` effects over the run's done messages."""


class ControlView(Protocol):
    """Reading what operators put in force (``swarm ctl``): workers poll it, masters and reports read it."""

    @abc.abstractmethod
    def controls(self, job: str | None = None) -> list[Control]:
        """The controls in force, by job, stage and state; of ``job`` and the fleet-wide ones, if given."""


class WorkerLedger(ControlView, Protocol):
    """A worker's part: claim messages, hold their leases, and finish or give them back."""

    @abc.abstractmethod
    def claim_batch(self, requests: Sequence[ClaimRequest], holder: str, lease: float) -> list[Claim | Exception]:
        """Take a lease for each request on a message the ledger knows, with this very body, in a running run.

        Refused (``Claim.state`` set) when the ledger has no such message
        (``Refusal.UNPLANNED``), holds another body under its id (``MISMATCH``),
        the message is terminal, another holder's lease is still live, or its
        run is not running (``RUN_ENDED``). A refusal changes nothing. Each grant
        counts one attempt. Each request gets the outcome it would get alone;
        a request's error (a ``BackendError``; any other is a bug) is its outcome, not raised.
        """

    @abc.abstractmethod
    def complete_batch(self, completions: Sequence[Completion]) -> list[Exception | None]:
        """Mark each message done and record its children (queued, with this parent) and counts, atomically.

        Each outcome is None, or ``Fenced`` when the token is stale, or the error
        (a ``BackendError``; any other is a bug) that message alone would get. Children are recorded
        before anything publishes them: a child the ledger does not know is never run.
        """

    def claim(self, run_id: str, phase: str, msg: Message, holder: str, lease: float) -> Claim:
        """``claim_batch`` of one, its error raised."""
        return _raised(self.claim_batch([ClaimRequest(run_id, phase, msg)], holder, lease)[0])

    def complete(
        self, msg_id: str, token: int, run_id: str, phase: str,
        children: Sequence[Message] = (), counts: Mapping[str, int] | None = None,
    ) -> None:
        """``complete_batch`` of one, its error raised."""
        _raised(self.complete_batch([Completion(msg_id, token, run_id, phase, children, counts or {})])[0])

    @abc.abstractmethod
    def renew(self, leases: Sequence[tuple[str, int]], lease: float) -> set[str]:
        """Extend the leases ``(id, token)`` still held; the ids of those it extended (the others are lost)."""

    @abc.abstractmethod
    def release(self, msg_id: str, token: int, state: MessageState, error: str | None, refund: bool = False) -> None:
        """End a lease: ``queued`` for a retry, or terminal ``dead``/``aborted``; ``Fenced`` if stale.

        ``refund``: the delivery does not count as an attempt (a backend was
        down, or the handler never started): back to the queue with it given back.
        """

    @abc.abstractmethod
    def reject(self, msg_id: str, body: bytes, reason: str) -> bool:
        """A known, unfinished message that can never run (bad input): dead with ``reason``.

        Only the message recorded with this very body is marked: stray,
        stale or forged copies on a queue cannot change a run. True if a
        message was marked.
        """

    @abc.abstractmethod
    def queued_children(self, parent_id: str) -> list[Message]:
        """The children a done parent recorded that are still queued (for re-publishing)."""

    @abc.abstractmethod
    def reads(self, run_id: str) -> Mapping[str, str]:
        """``Run.reads`` of a run: which run's output each phase it does not run comes from."""

    @abc.abstractmethod
    def open_count(self, run_id: str, phase: str, limit: int | None = None) -> int:
        """How many messages of the phase are not finished (planned, queued or claimed), counting up to ``limit``.

        Whether the phase is down to its tail; ``limit`` keeps the look cheap while it is far from it.
        """


class ResultView(RunView, Protocol):
    """A run's checks, its night's publication and operators' decisions, read only."""

    @abc.abstractmethod
    def checks(self, run_id: str) -> list[CheckResult]: ...

    @abc.abstractmethod
    def check_history(self, job: str, name: str, limit: int, exclude_night: str,
                      like: Mapping[str, str] | None = None) -> list[float]:
        """Check ``name``'s measured values in the ``limit`` latest published runs of ``job``, newest first.

        Runs of ``exclude_night`` (the night being checked) are left out, and
        runs whose params differ from ``like`` on any of its keys.
        """

    @abc.abstractmethod
    def publication(self, night: str) -> Publication | None: ...

    @abc.abstractmethod
    def decisions(self, run_id: str) -> list[Decision]: ...


class ResultLedger(ResultView, Protocol):
    """Recording a run's checks, the publication of its result, and operators' decisions on held runs."""

    @abc.abstractmethod
    def save_checks(self, run_id: str, results: Sequence[CheckResult]) -> None:
        """Record a run's check results, replacing any recorded before."""

    @abc.abstractmethod
    def begin_publish(self, night: str, job: str, run_id: str) -> Publication:
        """Record that ``run_id``'s result is being promoted; idempotent for the same run.

        ``previous`` is the run published until now; refused (``PublishRefused``)
        while another run's promotion is unfinished.
        """

    @abc.abstractmethod
    def finish_publish(self, night: str, run_id: str) -> None:
        """The promotion is complete: the night shows ``run_id``'s result, and the run is done, atomically."""

    @abc.abstractmethod
    def decide(self, run_id: str, action: str, reason: str, status: RunStatus | None = None) -> None:
        """Record an operator's decision on a run, setting its status if given, atomically."""


class MasterLedger(ResultLedger, ControlView, Protocol):
    """The master's part: its lock, its run and phases, the plan it checkpoints, the watch over it, its result."""

    @abc.abstractmethod
    def lock_master(self, key: str, holder: str) -> None:
        """Take (or renew) the one-master lock for ``key``, or raise ``MasterLocked`` naming the holder."""

    @abc.abstractmethod
    def unlock_master(self, key: str) -> None: ...

    @abc.abstractmethod
    def open_run(self, run_id: str, job: str, params: Mapping[str, Any],
                 spec: Mapping[str, Any] | None = None) -> Run:
        """Return the run, creating it (status running, with a rerun's ``spec``) if new."""

    @abc.abstractmethod
    def update_run(
        self, run_id: str, *, status: RunStatus | None = None, phase: str | None = None,
        error: str | None = None, finished: bool = False,
    ) -> None:
        """Set what is given; back to running clears the error and the finish time."""

    @abc.abstractmethod
    def phase_state(self, run_id: str, phase: str) -> PhaseState | None: ...

    @abc.abstractmethod
    def set_phase_state(self, run_id: str, phase: str, state: PhaseState) -> None: ...

    @abc.abstractmethod
    def save_plan(self, run_id: str, phase: str, messages: Sequence[Message]) -> None:
        """Record a phase's root messages (state planned) and mark the phase planned, atomically."""

    @abc.abstractmethod
    def planned(self, run_id: str, phase: str, limit: int, after: str = "") -> list[Message]:
        """Root messages of the phase not yet published, in id order, with ids after ``after``."""

    @abc.abstractmethod
    def mark_queued(self, ids: Sequence[str]) -> None:
        """Planned messages are now on the broker."""

    @abc.abstractmethod
    def counts(self, run_id: str, phase: str | None = None) -> dict[MessageState, int]:
        """Messages per state."""

    @abc.abstractmethod
    def recorded(self, run_id: str, phase: str, stages: Sequence[str] | None = None) -> list[Recorded]:
        """The messages a run recorded for ``phase`` (of ``stages``, if given), in id order."""

    @abc.abstractmethod
    def reclaim_expired(self, run_id: str, now: float) -> list[Message]:
        """Claimed messages whose lease ran out: set back to queued, returned for re-publishing."""

    @abc.abstractmethod
    def stale_queued(self, run_id: str, older_than: float) -> list[Message]:
        """Queued messages untouched since ``older_than``; touched now, returned for re-publishing."""

    @abc.abstractmethod
    def unstarted(self, run_id: str, phase: str, stages: Sequence[str], limit: int) -> list[Message]:
        """Queued messages of ``stages`` that no worker has ever claimed, in id order (what a split may replace)."""

    @abc.abstractmethod
    def split(self, run_id: str, phase: str, parent_id: str, children: Sequence[Message]) -> bool:
        """Replace a queued message no worker has ever claimed by ``children``, atomically.

        The message is marked done and ``children`` recorded queued with it as
        their parent, only if it is still queued and was never claimed (its
        lease token untouched): a worker may have written part of its work
        under any claim. True when it is split (by this call, or by an earlier
        run of it whose commit went unacknowledged); False, changing nothing,
        otherwise. A worker that receives it later finds it done.
        """


class HistoryLedger(ResultView, ControlView, Protocol):
    """Runs past and present, read only: status, the run list, reports."""

    @abc.abstractmethod
    def runs(
        self,
        job: str | None = None,
        status: RunStatus | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[Run]:
        """Runs newest first, filtered; ``text`` matches inside the error."""

    @abc.abstractmethod
    def jobs(self) -> list[str]:
        """The jobs the ledger has runs of, by name."""

    @abc.abstractmethod
    def chunk_counts(self, run_id: str) -> dict[str, dict[MessageState, int]]:
        """Per phase, messages per state."""

    @abc.abstractmethod
    def done_since(self, run_id: str, since: float) -> dict[str, int]:
        """Per stage, messages finished since ``since`` (for rates)."""

    @abc.abstractmethod
    def stage_counts(self, run_id: str) -> dict[str, dict[MessageState, int]]:
        """Per stage, messages per state."""

    @abc.abstractmethod
    def done_series(self, run_id: str, bucket: float,
                    counter: str = "rows") -> dict[str, list[tuple[float, int, int]]]:
        """Per stage, by time: (bucket start, messages done in it, their ``counter`` total) per ``bucket`` seconds."""

    @abc.abstractmethod
    def message_info(self, msg_id: str) -> Failure | None:
        """One message's stage, chunk, state, attempts, error and update time; None if the ledger lacks it."""

    @abc.abstractmethod
    def master_holder(self, key: str) -> str | None:
        """Who holds the one-master lock on ``key`` now; None when nobody does."""


class DeadLetterLedger(Protocol):
    """Dead letters gathered from the broker, shown, and replayed."""

    @abc.abstractmethod
    def add_dead_letter(self, queue: str, reason: str, body: bytes, message_id: str | None,
                        size: int | None = None, sha256: str | None = None) -> int:
        """Store a dead letter; a body over ``MAX_DEAD_LETTER_BYTES`` is stored cut, with its size and digest.

        ``size``/``sha256`` describe the original when ``body`` is already a cut copy.
        """

    @abc.abstractmethod
    def dead_letters(self, queue: str | None = None, replayed: bool = False,
                     limit: int = 1000) -> list[DeadLetterRecord]: ...

    @abc.abstractmethod
    def get_dead_letter(self, dl_id: int) -> DeadLetterRecord | None: ...

    @abc.abstractmethod
    def mark_replayed(self, ids: Iterable[int]) -> None: ...

    @abc.abstractmethod
    def revive(self, msg_id: str) -> None:
        """On a replay: a dead message goes back to queued with its attempts reset, and its run to running."""


class SchemaLedger(Protocol):
    """``swarm db``: the schema, and pruning old runs."""

    @abc.abstractmethod
    def init_schema(self) -> None:
        """Create or migrate the tables; idempotent."""

    @abc.abstractmethod
    def migrate(self) -> list[int]:
        """Apply pending schema steps; returns their numbers."""

    @abc.abstractmethod
    def schema_version(self) -> int | None:
        """The version the database holds; None before ``init_schema``."""

    @abc.abstractmethod
    def prune(self, before: float, dry_run: bool = False) -> Pruned:
        """Delete the runs that finished before ``before`` with all their rows, and old dead letters.

        The runs of a night that has a publication keep their run rows,
        phases, checks and counter totals (what readers, the checks' history
        and reruns' generations go by); only their messages go.

        Dead letters go when they were created before ``before`` and were
        replayed or belong to no message still in the ledger.
        """


class ControlLedger(ControlView, Protocol):
    """``swarm ctl``: putting controls in force and lifting them."""

    @abc.abstractmethod
    def set_control(self, job: str, stage: str, state: ControlState, issued_by: str, reason: str) -> Control:
        """Put ``state`` in force on ``job``'s ``stage`` (``EVERY_STAGE``: all; ``job`` ``FLEET``: every job).

        Setting it again keeps it, with the new reason, and raises its generation.
        """

    @abc.abstractmethod
    def lift_controls(self, job: str, stage: str | None = None,
                      states: Sequence[ControlState] = (ControlState.PAUSED, ControlState.DRAINING)) -> list[Control]:
        """Remove ``job``'s controls of ``states`` on ``stage`` (None: on every stage and on the job); the removed."""


class Ledger(WorkerLedger, MasterLedger, ResultLedger, HistoryLedger, DeadLetterLedger, SchemaLedger, ControlLedger,
             Protocol):
    """Every role: what ``swarm.backends.open_ledger`` returns.

    Implementations: ``swarm.ledgers.sqlite`` (embedded default) and
    ``swarm.ledgers.mysql``, both ``swarm.ledgers.sql.SqlLedger``.
    """

    def close(self) -> None:
        """Release connections."""
