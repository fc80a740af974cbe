"""``BlockingRabbitBroker``: RabbitMQ for processes that never serve, such as the master and one-shot commands.

Each call runs on the calling thread, which pumps the connection for the
length of the call; one call at a time, other threads wait their turn.
A publish writes its whole batch and then waits for the confirms (see
``publishing``): pika's ``BlockingConnection`` waits for each message's
confirm in turn, a round trip per message, over ten times slower for the
master's large phases.

Nothing answers heartbeats between calls: a connection the broker dropped
meanwhile is noticed by the next call, which connects again and runs once
more. A publish run twice may duplicate messages; deterministic message ids
make that harmless. It does not consume: ``consume``, ``set_prefetch``,
``serve`` and ``cancel`` raise ``NotImplementedError``.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, NoReturn, TypeVar

from swarm.broker import Callback
from swarm.brokers.rabbitmq.connection import Connection
from swarm.brokers.rabbitmq.errors import ConnectionLost
from swarm.brokers.rabbitmq.operations import RabbitOperations
from swarm.brokers.rabbitmq.url import BrokerOptions, parse_url

log = logging.getLogger("swarm.brokers.rabbitmq")

T = TypeVar("T")


class BlockingRabbitBroker(RabbitOperations):
    """A RabbitMQ connection pumped by whichever thread calls; publishes, inspects and empties queues."""

    def __init__(self, url: str | BrokerOptions):
        super().__init__(parse_url(url) if isinstance(url, str) else url)
        self._lock = threading.Lock()  # held by the thread pumping the connection
        self._conn: Connection | None = None
        self._closed = False

    def call(self, fn: Callable[[Connection], T], *, connect: bool = True) -> T | Any:
        with self._lock:
            if self._closed:
                if connect:
                    raise self._opts.error("the broker connection is closed")
                return None
            conn = self._conn if self._conn is not None and self._conn.live else None
            if conn is None:
                return self._connect().call(fn) if connect else None
            try:
                return conn.call(fn)
            except ConnectionLost:
                self._disconnect()
                if not connect:
                    return None
                log.info("RabbitMQ at %s: the idle connection was lost; reconnecting", self._opts.label)
                return self._connect().call(fn)

    def hand_over(self) -> Connection | None:
        """Give up the connection, if live, to a thread that pumps it from now on; the next call opens another."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and not conn.live:
            conn.shut()
            return None
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._disconnect()

    def _connect(self) -> Connection:
        self._disconnect()  # a lost connection still holds its I/O loop
        self._conn = Connection.open(self._opts)
        return self._conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.shut()

    def consume(self, queue: str, prefetch: int, callback: Callback) -> NoReturn:
        self._refuse("consume")

    def set_prefetch(self, queue: str, prefetch: int) -> NoReturn:
        self._refuse("set_prefetch")

    def serve(self, stop: threading.Event) -> NoReturn:
        self._refuse("serve")

    def cancel(self, queue: str | None = None) -> NoReturn:
        self._refuse("cancel")

    def _refuse(self, method: str) -> NoReturn:
        raise NotImplementedError(
            f"BlockingRabbitBroker.{method}: this broker publishes and inspects queues but never consumes; "
            f"a consumer needs the serving broker, swarm.backends.open_broker(url)")
