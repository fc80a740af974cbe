"""The Broker role's queue operations as calls on a ``Connection``, shared by both RabbitMQ brokers.

Each subclass says where a call runs (``call``): on a connection the
caller pumps (``BlockingRabbitBroker``), or on serve's thread
(``RabbitBroker``). ``publish`` refuses a batch naming a queue not known to
exist before it sends any of it (checked once per name); a queue deleted
later makes the broker return the message (``mandatory``), and the publish
raises.

A bounded queue (``declare(..., bounds)``) gets ``x-max-length``, but a
quorum queue applies it only after the publishes already on their way: a
batch that starts below the bound is taken whole. So a publish to a bounded
queue first asks how many messages are ready there and sends only what
fits, one publish at a time per queue in this process; the rest is refused
with ``QueueFull``, as is what the broker itself nacks (another process
filled the queue meanwhile). The queue can then exceed its bound only by
what other processes publish to it at the same instant.
"""
from __future__ import annotations

import abc
import contextlib
import threading
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

from swarm.broker import Broker, Store, dead_letter_from, dead_letter_parts, dead_letter_queue
from swarm.brokers.rabbitmq.connection import Connection
from swarm.brokers.rabbitmq.consuming import consumer_timeout_note
from swarm.brokers.rabbitmq.publishing import Nacked, Outgoing, persistent
from swarm.brokers.rabbitmq.topology import dead_letter_reason, delay_queues, delay_tier, retry_queue
from swarm.brokers.rabbitmq.url import BrokerOptions
from swarm.errors import QueueFull

T = TypeVar("T")


class RabbitOperations(Broker):
    """declare, publish, dead_letter, depth, take_dead, purge and ping over one connection at a time."""

    def __init__(self, opts: BrokerOptions):
        self._opts = opts
        self._known: set[str] = set()  # queues seen to exist, so publish can refuse unknown ones up front
        self.bounds: dict[str, int] = {}  # bounded queues (declared so) and their bounds
        self._bound_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._opts.label!r})"

    @abc.abstractmethod
    def call(self, fn: Callable[[Connection], T], *, connect: bool = True) -> T | Any:
        """``fn(connection)`` where this broker's connection is pumped; its result (a publish's: once confirmed).

        ``connect=False``: without a live connection there is nothing to do; returns None.
        """

    def declare(self, queues: Iterable[str], bounds: Mapping[str, int] | None = None) -> None:
        names = list(dict.fromkeys(queues))
        bounds = {q: n for q, n in (bounds or {}).items() if q in names}
        self.call(lambda conn: conn.declare(names, bounds))
        self._known.update(names, map(dead_letter_queue, names))
        self.bounds.update(bounds)

    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        messages = [(queue, bytes(body)) for queue, body in messages]
        if not messages:
            return
        self._require({queue for queue, _ in messages})
        if delay > 0:  # to the delay tiers, which are not bounded
            tier = delay_tier(delay)
            self._send([(retry_queue(queue, tier), body, persistent()) for queue, body in messages])
            return
        bounded = sorted({queue for queue, _ in messages if queue in self.bounds})
        if not bounded:
            self._send([(key, body, persistent()) for key, body in messages])
            return
        with self._holding(bounded):
            ready = self.call(lambda conn: {q: conn.ready(q) for q in bounded})
            room = {q: self.bounds[q] - ready[q] for q in bounded}
            sent: list[int] = []
            refused: list[int] = []
            for i, (queue, _) in enumerate(messages):
                if queue in room:
                    room[queue] -= 1
                    if room[queue] < 0:
                        refused.append(i)
                        continue
                sent.append(i)
            try:
                self._send([(messages[i][0], messages[i][1], persistent()) for i in sent])
            except QueueFull as exc:
                refused += [sent[j] for j in exc.refused]
        if refused:
            full = sorted({messages[i][0] for i in refused})
            said = ", ".join(f"{q} (max_queue {self.bounds[q]})" for q in full)
            raise QueueFull(full, refused, str(self._opts.error(
                f"queue {said} is full: {len(refused)} message(s) refused; publish them again once it has room")))

    @contextlib.contextmanager
    def _holding(self, queues: list[str]) -> Iterator[None]:
        """This process's publishes to ``queues`` one at a time (sorted: no two callers wait on each other)."""
        with self._locks_lock:
            locks = [self._bound_locks.setdefault(q, threading.Lock()) for q in queues]
        with contextlib.ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield

    def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        dlq = dead_letter_queue(queue)
        self._require({dlq})
        stored, headers = dead_letter_parts(body, reason)
        self._send([(dlq, stored, persistent(headers))])

    def depth(self, queue: str, delayed: bool = True) -> int:
        names = [queue] + (delay_queues(queue) if delayed else [])
        return self.call(lambda conn: sum(conn.ready(name) for name in names))

    def take_dead(self, queue: str, store: Store, limit: int = 1000) -> int:
        name = dead_letter_queue(queue)
        moved = 0
        while moved < limit:
            got = self.call(lambda conn: conn.get(name))
            if got is None:
                break
            ch, tag, props, body = got
            try:
                store(dead_letter_from(queue, body, props.headers, dead_letter_reason(props.headers)))
            except BaseException:
                self.call(_answer(ch, tag, ack=False), connect=False)
                raise
            self.call(_answer(ch, tag, ack=True), connect=False)
            moved += 1
        if moved:
            self.call(lambda conn: conn.ready(name))  # a round trip on the channel: its acks have been applied
        return moved

    def purge(self, queue: str) -> int:
        return self.call(lambda conn: conn.purge(queue))

    def ping(self) -> str:
        """Connect now if not connected, declaring nothing: the server's product and version."""
        props = self.call(lambda conn: conn.server_properties())
        said = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in (props.get("product"), props.get("version")) if v]
        return " ".join(said) or "an AMQP server"

    def consumer_timeout_note(self, queue: str, handler_timeout: float) -> str | None:
        """What to configure when a handler on ``queue`` can outlast the server's consumer_timeout; None if it fits.

        The server's value comes from the URL's ``consumer_timeout`` option (default 1800 s).
        """
        return consumer_timeout_note(queue, handler_timeout, self._opts.consumer_timeout)

    def _require(self, queues: set[str]) -> None:
        """Refuse a whole batch before publishing any of it when a queue does not exist."""
        unknown = queues - self._known
        if unknown:
            self.call(lambda conn: [conn.ready(q) for q in sorted(unknown)])
            self._known |= unknown

    def _send(self, messages: list[Outgoing]) -> None:
        """Publish and return once the broker has confirmed every message.

        ``QueueFull`` when the broker refused messages only of bounded queues;
        any other refusal is a ``BackendError`` (``Nacked``).
        """
        if not messages:
            return
        try:
            self.call(lambda conn: conn.publisher.send(messages))
        except Nacked as exc:
            if not set(exc.refused.values()) <= set(self.bounds):
                raise
            raise QueueFull(exc.refused.values(), exc.refused, str(exc)) from None


def _answer(ch: Any, tag: int, ack: bool) -> Callable[[Any], Any]:
    """The call that acks (or returns) one message taken with ``get``."""
    return lambda conn: conn.answer(ch, tag, ack=ack)
