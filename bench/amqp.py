"""Plain pika for the bench: quorum queues, a confirmed (optionally paced) publisher, queue depths."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from typing import Iterable, Iterator

import pika
from pika.spec import Basic

from tests.support.rabbitmq import DepthSampler  # noqa: F401 - the bench cases sample through it
from tests.support.waiting import wait_until

PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
QUORUM = {"x-queue-type": "quorum"}
TICK = 0.01  # seconds between paced publishing rounds
REFUSED_PAUSE = 0.05  # seconds before a refused message is offered again


def params(url: str) -> pika.URLParameters:
    """Connection parameters that wait out a broker restart (other tests on the machine restart it)."""
    p = pika.URLParameters(url)
    p.connection_attempts, p.retry_delay = 30, 2.0
    return p


@contextlib.contextmanager
def channel(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(params(url))
    try:
        yield conn.channel()
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def declare_quorum(url: str, queues: Iterable[str]) -> None:
    with channel(url) as ch:
        for queue in queues:
            ch.queue_declare(queue, durable=True, arguments=QUORUM)


def depth(url: str, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of ``queue`` now, from a passive declare."""
    with channel(url) as ch:
        method = ch.queue_declare(queue, passive=True).method
        return method.message_count, method.consumer_count


def depths(url: str, queues: Iterable[str]) -> dict[str, int]:
    with channel(url) as ch:
        return {q: ch.queue_declare(q, passive=True).method.message_count for q in queues}


def purge(url: str, queues: Iterable[str]) -> None:
    with channel(url) as ch:
        for queue in queues:
            ch.queue_purge(queue)


def delete(url: str, queues: Iterable[str]) -> None:
    """Delete ``queues`` if they exist, so that the next declaration may give them other arguments (a bound)."""
    with channel(url) as ch:
        for queue in queues:
            ch.queue_delete(queue)


def wait_consumers(url: str, queues: Iterable[str], count: int, timeout: float = 60.0) -> None:
    """Wait until every queue has ``count`` consumers (the workers are up and subscribed)."""
    queues = list(queues)
    wait_until(lambda: all(_consumers(url, q) >= count for q in queues), f"{count} consumers on each of {queues}",
               timeout, every=0.1)


def _consumers(url: str, queue: str) -> int:
    try:
        return depth(url, queue)[1]
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return 0  # not declared yet: its consumers are still starting
        raise


@dataclasses.dataclass
class Published:
    confirmed: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.confirmed / self.seconds if self.seconds else 0.0


class ConfirmedPublisher:
    """Publishes persistent messages with confirms on one connection, at most ``window`` unconfirmed.

    Unpaced it goes as fast as the confirms come back; paced it offers ``rate``
    messages a second (as far as the window allows) until ``seconds`` are up.
    ``offer_again``: a message the broker refuses (a bounded queue is full)
    is offered again after ``REFUSED_PAUSE``, before new ones and within the
    same pace, as Swarm's publishers wait for room; else a refusal fails the run.
    """

    def __init__(self, url: str, window: int = 2000, offer_again: bool = False):
        self.url, self.window, self.offer_again = url, window, offer_again
        self._order: collections.deque[int] = collections.deque()
        self._unconfirmed: set[int] = set()
        self._out: dict[int, tuple[str, bytes]] = {}  # tag -> message, while unconfirmed (offer_again only)
        self._again: collections.deque[tuple[str, bytes]] = collections.deque()
        self._paused_until = 0.0
        self._tag = 0
        self.confirmed = self.nacked = self.refused = 0

    def run(self, messages: Iterable[tuple[str, bytes]], rate: float | None = None,
            seconds: float | None = None) -> Published:
        self._source, self._rate, self._seconds = iter(messages), rate, seconds
        self._exhausted, self._error = False, None
        self._conn = pika.SelectConnection(params(self.url), on_open_callback=self._opened,
                                           on_open_error_callback=self._failed, on_close_callback=self._closed)
        self._conn.ioloop.start()
        if self._error is not None:
            raise RuntimeError(f"publisher: {self._error}")
        if self.nacked:
            raise RuntimeError(f"publisher: the broker refused {self.nacked} message(s)")
        return Published(self.confirmed, self._ended - self._started)

    def _opened(self, conn: pika.SelectConnection) -> None:
        conn.channel(on_open_callback=self._channel_open)

    def _failed(self, _conn, error) -> None:
        self._error = error
        self._conn.ioloop.stop()

    def _closed(self, _conn, reason) -> None:
        if not self._exhausted or self._unconfirmed:
            self._error = self._error or reason
        self._conn.ioloop.stop()

    def _channel_open(self, ch) -> None:
        self._ch = ch
        ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=lambda _frame: self._start())

    def _start(self) -> None:
        self._started = self._ended = time.monotonic()
        self._sent = 0
        self._tick()

    def _due(self) -> int:
        room = self.window - len(self._unconfirmed)
        if self._rate is None:
            return room
        return min(room, int(self._rate * (time.monotonic() - self._started)) - self._sent)

    def _tick(self) -> None:
        if not self._exhausted and self._seconds is not None and time.monotonic() - self._started >= self._seconds:
            self._exhausted = True
        for _ in range(max(0, self._due()) if not self._exhausted else 0):
            if self._again:
                if time.monotonic() < self._paused_until:
                    break  # a bounded queue refused: nothing more until the pause is over
                item = self._again.popleft()
            else:
                item = next(self._source, None)
            if item is None:
                self._exhausted = not self._again  # refused ones still to go again: not done yet
                break
            self._ch.basic_publish("", item[0], item[1], PERSISTENT)
            self._tag += 1
            self._sent += 1
            self._order.append(self._tag)
            self._unconfirmed.add(self._tag)
            if self.offer_again:
                self._out[self._tag] = item
        if self._exhausted and not self._unconfirmed:
            self._ended = time.monotonic()
            self._conn.close()
        elif self._rate is not None or self._exhausted or self._again:
            self._conn.ioloop.call_later(TICK, self._tick)
        # unpaced and not exhausted: the next confirm calls _tick

    def _on_confirm(self, frame) -> None:
        method = frame.method
        nack = isinstance(method, Basic.Nack)
        if method.multiple:
            while self._order and self._order[0] <= method.delivery_tag:
                self._settle(self._order.popleft(), nack)
        else:
            self._settle(method.delivery_tag, nack)
            while self._order and self._order[0] not in self._unconfirmed:
                self._order.popleft()
        if self._rate is None and not self._exhausted and len(self._unconfirmed) <= self.window // 2:
            self._tick()

    def _settle(self, tag: int, nack: bool = False) -> None:
        if tag not in self._unconfirmed:
            return
        self._unconfirmed.discard(tag)
        item = self._out.pop(tag, None)
        if not nack:
            self.confirmed += 1
        elif item is not None:  # refused: a bounded queue is full; offered again after a pause
            self.refused += 1
            self._again.append(item)
            self._paused_until = time.monotonic() + REFUSED_PAUSE
        else:
            self.nacked += 1


def publish(url: str, messages: Iterable[tuple[str, bytes]], window: int = 2000) -> Published:
    """Publish every message, confirmed, as fast as the broker takes them."""
    return ConfirmedPublisher(url, window).run(messages)
