"""The broker role: one durable queue per stage, with retry and dead-letter queues."""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from swarm.errors import clip
from swarm.limits import MAX_DEAD_LETTER_BYTES

if TYPE_CHECKING:
    from swarm.stage import Job

REASON_HEADER = "x-swarm-reason"
SIZE_HEADER = "x-swarm-size"  # a dead letter's body was cut: its whole size
SHA256_HEADER = "x-swarm-sha256"  # and the SHA-256 of the whole


def stage_queue(job: str, stage: str) -> str:
    """The queue that carries work for one stage of one job."""
    return f"swarm.{job}.{stage}"


def dead_letter_queue(queue: str) -> str:
    return f"{queue}.dlq"


def queue_bounds(job: "Job", stages: Iterable[str] | None = None) -> dict[str, int]:
    """The bounded queues among ``job``'s stages (default: all) and their bounds (``max_queue``)."""
    names = job.stages if stages is None else stages
    return {stage_queue(job.name, s): bound for s in names if (bound := job.max_queue(s))}


def declare_stages(broker: "Broker", job: "Job", stages: Iterable[str] | None = None) -> None:
    """Declare the queues of ``job``'s stages (default: all), each with its bound.

    Every declarer of a queue must give it the same bound: RabbitMQ refuses
    a declaration whose arguments differ from the queue's ("inequivalent arg").
    """
    names = list(job.stages if stages is None else stages)
    broker.declare([stage_queue(job.name, s) for s in names], queue_bounds(job, names))


class Delivery(abc.ABC):
    """One delivered message; ``ack``/``requeue`` may be called from any thread, once."""

    queue: str
    body: bytes
    headers: dict
    redelivered: bool

    @abc.abstractmethod
    def ack(self) -> None:
        """The message is finished with: the broker forgets it."""

    @abc.abstractmethod
    def requeue(self) -> None:
        """Give the message back to the queue for another delivery."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    queue: str  # the stage queue it was dead-lettered from
    body: bytes
    reason: str
    size: int | None = None  # set when ``body`` is a cut copy: of the whole
    sha256: str | None = None


Callback = Callable[[Delivery], None]
Store = Callable[[DeadLetter], None]


def dead_letter_parts(body: bytes, reason: str) -> tuple[bytes, dict[str, Any]]:
    """What a dead letter carries: the reason clipped; a body too large for the ledger cut, its size and digest kept.

    Clipping here keeps a header within one AMQP frame (a longer one makes
    RabbitMQ close the connection), and the ledger's row within one packet.
    """
    body = bytes(body)
    headers: dict[str, Any] = {REASON_HEADER: clip(reason)}
    if len(body) > MAX_DEAD_LETTER_BYTES:
        headers[SIZE_HEADER] = len(body)
        headers[SHA256_HEADER] = hashlib.sha256(body).hexdigest()
        body = body[:MAX_DEAD_LETTER_BYTES]
    return body, headers


def dead_letter_from(queue: str, body: bytes, headers: Mapping[str, Any] | None, reason: str) -> DeadLetter:
    """A dead letter as a broker hands it back, with what its headers say of a cut body."""
    headers = headers or {}
    size, sha = headers.get(SIZE_HEADER), headers.get(SHA256_HEADER)
    if isinstance(sha, bytes):
        sha = sha.decode("ascii", "replace")
    valid = isinstance(size, int) and not isinstance(size, bool) and isinstance(sha, str)
    return DeadLetter(queue, bytes(body), reason, size if valid else None, sha if valid else None)


class Broker(abc.ABC):
    """A connection to the message broker.

    ``serve`` runs the I/O loop on the calling thread and invokes consumer
    callbacks there; every other method is safe to call from any thread.
    ``publish`` returns only once the broker has confirmed every message.
    A broker opened not to serve (``open_broker(url, serve=False)``, the
    master's) may raise ``NotImplementedError`` from ``consume``,
    ``set_prefetch``, ``serve`` and ``cancel``.
    """

    outlives_process = True  # False: its queues live in this process and go with it (the in-process broker)

    @abc.abstractmethod
    def declare(self, queues: Iterable[str], bounds: Mapping[str, int] | None = None) -> None:
        """Create (idempotently) each stage queue with its retry and dead-letter queues.

        ``bounds``: the most messages a queue may hold ready (its ``max_queue``);
        a queue not named there is unbounded. A queue declared already with
        another bound is refused with a ``BackendError``.
        """

    @abc.abstractmethod
    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        """Publish persistent ``(queue, body)`` messages, confirmed; ``delay`` seconds before delivery.

        A bounded queue takes what it has room for: ``QueueFull`` names the
        indexes of the messages it refused, the others are published. A
        delayed message waits outside the queue and enters it once due and
        there is room.
        """

    @abc.abstractmethod
    def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        """Put ``body`` on ``queue``'s dead-letter queue with ``reason``, confirmed (see ``dead_letter_parts``)."""

    @abc.abstractmethod
    def consume(self, queue: str, prefetch: int, callback: Callback) -> None:
        """Deliver from ``queue`` to ``callback`` with at most ``prefetch`` unacked at once."""

    @abc.abstractmethod
    def set_prefetch(self, queue: str, prefetch: int) -> None:
        """Let this broker's consumer of ``queue`` hold at most ``prefetch`` unacked; those in hand stay ackable."""

    @abc.abstractmethod
    def serve(self, stop: threading.Event) -> None:
        """Run the I/O loop until ``stop`` is set, reconnecting after broker failures."""

    @abc.abstractmethod
    def cancel(self, queue: str | None = None) -> None:
        """Stop receiving new deliveries (of ``queue`` only, if given); unacked ones may still be acked."""

    @abc.abstractmethod
    def depth(self, queue: str, delayed: bool = True) -> int:
        """Messages ready on ``queue``, and unless ``delayed`` is False those waiting in its delay queues.

        Unacked deliveries are not counted.
        """

    @abc.abstractmethod
    def take_dead(self, queue: str, store: Store, limit: int = 1000) -> int:
        """Move up to ``limit`` messages off ``queue``'s dead-letter queue, each through ``store`` first.

        A letter is removed only once ``store`` has returned for it; when
        ``store`` raises, that letter and those behind it stay on the queue
        and the exception propagates. Returns how many were moved.
        """

    @abc.abstractmethod
    def purge(self, queue: str) -> int:
        """Drop every ready message on ``queue``; returns how many."""

    def consumer_timeout_note(self, queue: str, handler_timeout: float) -> str | None:
        """What to configure when a handler can outlast the broker's consumer timeout; None if it fits."""
        return None

    def ping(self) -> str:
        """Connect now if not connected, declaring nothing; what answered (``swarm config check``)."""
        return "in-process: nothing to connect to"

    def close(self) -> None:  # noqa: B027 - a broker holding no connection has nothing to close
        """Close the connection; unacked deliveries go back to their queues."""
