"""The Broker role's queue operations as calls on a ``Connection``, shared by both RabbitMQ brokers.

Each subclass says where a call runs (``call``): on a connection the
caller pumps (``BlockingRabbitBroker``), or on serve's thread
(``RabbitBroker``). ``publish`` refuses a batch naming a queue not known to
exist before it sends any of it (checked once per name); a queue deleted
later makes the broker return the message (``mandatory``), and the publish
raises.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterable, Sequence, TypeVar

from swarm.broker import Broker, Store, dead_letter_from, dead_letter_parts, dead_letter_queue
from swarm.brokers.rabbitmq.connection import Connection
from swarm.brokers.rabbitmq.consuming import consumer_timeout_note
from swarm.brokers.rabbitmq.publishing import Outgoing, persistent
from swarm.brokers.rabbitmq.topology import dead_letter_reason, delay_queues, delay_tier, retry_queue
from swarm.brokers.rabbitmq.url import BrokerOptions

T = TypeVar("T")


class RabbitOperations(Broker):
    """declare, publish, dead_letter, depth, take_dead, purge and ping over one connection at a time."""

    def __init__(self, opts: BrokerOptions):
        self._opts = opts
        self._known: set[str] = set()  # queues seen to exist, so publish can refuse unknown ones up front

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._opts.label!r})"

    @abc.abstractmethod
    def call(self, fn: Callable[[Connection], T], *, connect: bool = True) -> T | Any:
        """``fn(connection)`` where this broker's connection is pumped; its result (a publish's: once confirmed).

        ``connect=False``: without a live connection there is nothing to do; returns None.
        """

    def declare(self, queues: Iterable[str]) -> None:
        names = list(dict.fromkeys(queues))
        self.call(lambda conn: conn.declare(names))
        self._known.update(names, map(dead_letter_queue, names))

    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        messages = [(queue, bytes(body)) for queue, body in messages]
        if not messages:
            return
        self._require({queue for queue, _ in messages})
        if delay > 0:
            tier = delay_tier(delay)
            messages = [(retry_queue(queue, tier), body) for queue, body in messages]
        self._send([(key, body, persistent()) for key, body in messages])

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
        """Publish and return once the broker has confirmed every message."""
        self.call(lambda conn: conn.publisher.send(messages))


def _answer(ch: Any, tag: int, ack: bool) -> Callable[[Any], Any]:
    """The call that acks (or returns) one message taken with ``get``."""
    return lambda conn: conn.answer(ch, tag, ack=ack)
