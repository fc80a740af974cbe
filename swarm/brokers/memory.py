"""The in-process broker (``memory://`` or ``memory://NAME``): the demo's and handler tests' default.

A ``MemoryHub`` plays the server: named queues, delayed messages and
dead-letter queues shared by every ``MemoryBroker`` (connection) in the
process. Closing a connection returns its unacked deliveries to their
queues, as a broker does when a worker process dies.

A bounded queue behaves as RabbitMQ's does with ``x-max-length`` and
``x-overflow: reject-publish``: a publish takes what fits and the rest is
refused (``QueueFull``, naming the refused messages); a delayed message
that comes due while its queue is full waits until there is room; a
requeued delivery always goes back. Declaring a queue again with another
bound is refused, as RabbitMQ refuses an inequivalent argument.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from typing import Iterable, Mapping, Sequence

from swarm.broker import (
    REASON_HEADER,
    Broker,
    Callback,
    Delivery,
    Store,
    dead_letter_from,
    dead_letter_parts,
    dead_letter_queue,
)
from swarm.errors import BackendError, BackendRefused, QueueFull

_Item = tuple[bytes, dict, bool]  # body, headers, redelivered
_GONE = object()
DUE_AGAIN = 0.05  # seconds: a delayed message due while its queue is full looks again this much later


class MemoryHub:
    """The shared state of in-process queues."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queues: dict[str, collections.deque[_Item]] = {}
        self.delayed: list[tuple[float, int, str, bytes]] = []
        self.bounds: dict[str, int] = {}  # queue -> most messages it holds ready (max_queue)
        self._seq = itertools.count()

    def queue(self, name: str) -> collections.deque[_Item]:
        try:
            return self.queues[name]
        except KeyError:
            raise BackendError(f"queue {name!r} is not declared") from None

    def put(self, name: str, body: bytes, headers: dict | None = None, front: bool = False,
            redelivered: bool = False) -> None:
        q = self.queue(name)
        item = (bytes(body), dict(headers or {}), redelivered)
        q.appendleft(item) if front else q.append(item)
        self.cond.notify_all()

    def full(self, name: str) -> bool:
        """Whether bounded queue ``name`` holds as many ready messages as it may."""
        bound = self.bounds.get(name)
        return bound is not None and len(self.queue(name)) >= bound

    def promote_due(self, now: float) -> float | None:
        """Move delayed messages that are due onto their queues; seconds until the next one.

        One due while its queue is full waits in the delay queue a little longer.
        """
        while self.delayed and self.delayed[0][0] <= now:
            _, _, name, body = heapq.heappop(self.delayed)
            if self.full(name):
                heapq.heappush(self.delayed, (now + DUE_AGAIN, next(self._seq), name, body))
            else:
                self.put(name, body)
        return self.delayed[0][0] - now if self.delayed else None

    def delay(self, name: str, body: bytes, seconds: float) -> None:
        self.queue(name)
        heapq.heappush(self.delayed, (time.monotonic() + seconds, next(self._seq), name, bytes(body)))
        self.cond.notify_all()


_hubs: dict[str, MemoryHub] = {}
_hubs_lock = threading.Lock()


def hub(name: str = "default") -> MemoryHub:
    """The process-wide hub called ``name``."""
    with _hubs_lock:
        return _hubs.setdefault(name, MemoryHub())


class _Consumer:
    def __init__(self, queue: str, prefetch: int, callback: Callback):
        self.queue, self.prefetch, self.callback = queue, prefetch, callback
        self.unacked = 0


class MemoryDelivery(Delivery):
    def __init__(self, broker: "MemoryBroker", consumer: _Consumer, item: _Item):
        self.queue = consumer.queue
        self.body, self.headers, self.redelivered = item
        self.consumer = consumer
        self._broker = broker

    def ack(self) -> None:
        self._broker.settle(self, requeue=False)

    def requeue(self) -> None:
        self._broker.settle(self, requeue=True)


class MemoryBroker(Broker):
    """One connection to a ``MemoryHub``."""

    outlives_process = False

    def __init__(self, hub_: MemoryHub | None = None):
        self.hub = hub_ or hub()
        self._consumers: list[_Consumer] = []
        self._unacked: dict[MemoryDelivery, None] = {}  # in delivery order
        self._closed = False

    def declare(self, queues: Iterable[str], bounds: Mapping[str, int] | None = None) -> None:
        bounds = dict(bounds or {})
        with self.hub.cond:
            names = list(queues)
            for name in names:
                if name in self.hub.queues and self.hub.bounds.get(name) != bounds.get(name):
                    raise BackendRefused(
                        f"in-process broker: declaring queue {name!r}: inequivalent arg 'x-max-length': received "
                        f"{bounds.get(name)} but current is {self.hub.bounds.get(name)}. The queue exists with other "
                        "arguments: delete it or make them match")
            for name in names:
                self.hub.queues.setdefault(name, collections.deque())
                self.hub.queues.setdefault(dead_letter_queue(name), collections.deque())
                if name in bounds:
                    self.hub.bounds[name] = bounds[name]

    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        self._check_open()
        refused: list[int] = []
        with self.hub.cond:
            for name in {q for q, _ in messages}:
                self.hub.queue(name)  # refuse the whole batch if any queue is unknown
            for i, (name, body) in enumerate(messages):
                if delay > 0:
                    self.hub.delay(name, body, delay)
                elif self.hub.full(name):
                    refused.append(i)
                else:
                    self.hub.put(name, body)
        if refused:
            full = {messages[i][0] for i in refused}
            bounds = ", ".join(f"{q} (max_queue {self.hub.bounds[q]})" for q in sorted(full))
            raise QueueFull(full, refused, f"in-process broker: queue {bounds} is full: {len(refused)} message(s) "
                                           "refused; publish them again once it has room")

    def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        self._check_open()
        stored, headers = dead_letter_parts(body, reason)
        with self.hub.cond:
            self.hub.put(dead_letter_queue(queue), stored, headers)

    def consume(self, queue: str, prefetch: int, callback: Callback) -> None:
        with self.hub.cond:
            self.hub.queue(queue)
            self._consumers.append(_Consumer(queue, max(1, prefetch), callback))

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        with self.hub.cond:
            for consumer in self._consumers:
                if consumer.queue == queue:
                    consumer.prefetch = max(1, prefetch)
            self.hub.cond.notify_all()

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set() and not self._closed:
            ready = self._next_ready()
            if ready is None:
                continue
            delivery, consumer = ready
            consumer.callback(delivery)

    def _next_ready(self) -> tuple[MemoryDelivery, _Consumer] | None:
        with self.hub.cond:
            wait = self.hub.promote_due(time.monotonic())
            for consumer in self._consumers:
                q = self.hub.queues[consumer.queue]
                if q and consumer.unacked < consumer.prefetch:
                    consumer.unacked += 1
                    delivery = MemoryDelivery(self, consumer, q.popleft())
                    self._unacked[delivery] = None
                    return delivery, consumer
            self.hub.cond.wait(timeout=min(wait, 0.05) if wait is not None else 0.05)
        return None

    def settle(self, delivery: MemoryDelivery, requeue: bool) -> None:
        """Ack ``delivery``, or give it back to the front of its queue; ``MemoryDelivery`` calls this, once counts."""
        with self.hub.cond:
            if self._unacked.pop(delivery, _GONE) is _GONE:
                return  # already settled, or returned to the queue when the connection closed
            delivery.consumer.unacked -= 1
            if requeue:
                self.hub.put(delivery.queue, delivery.body, delivery.headers, front=True, redelivered=True)
            self.hub.cond.notify_all()

    def cancel(self, queue: str | None = None) -> None:
        with self.hub.cond:
            self._consumers[:] = [c for c in self._consumers if queue is not None and c.queue != queue]

    def depth(self, queue: str, delayed: bool = True) -> int:
        with self.hub.cond:
            waiting = sum(1 for d in self.hub.delayed if d[2] == queue) if delayed else 0
            return len(self.hub.queue(queue)) + waiting

    def take_dead(self, queue: str, store: Store, limit: int = 1000) -> int:
        moved = 0
        while moved < limit:
            with self.hub.cond:
                dlq = self.hub.queue(dead_letter_queue(queue))
                if not dlq:
                    break
                item = dlq.popleft()
            body, headers, _ = item
            try:
                store(dead_letter_from(queue, body, headers, str(headers.get(REASON_HEADER, "unknown"))))
            except BaseException:
                with self.hub.cond:
                    dlq.appendleft(item)
                raise
            moved += 1
        return moved

    def purge(self, queue: str) -> int:
        with self.hub.cond:
            q = self.hub.queue(queue)
            n = len(q)
            q.clear()
            return n

    def close(self) -> None:
        """Unacked deliveries go back to the front of their queues in the order they came, marked redelivered."""
        with self.hub.cond:
            self._closed = True
            self._consumers.clear()
            for delivery in reversed(self._unacked):
                self.hub.put(delivery.queue, delivery.body, delivery.headers, front=True, redelivered=True)
            self._unacked.clear()
            self.hub.cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("memory broker connection is closed")
