"""Case 1: the practical limit: a hand-written pika relay, A -> B, in one process.

Same guarantees as Swarm gives a message: quorum queues, persistent messages,
stage A acks a delivery only after the broker confirmed the message it
forwarded to B, stage B acks after its (empty) work. What makes it fast is
what any careful pika program does: one asynchronous ``SelectConnection``,
a generous prefetch, and acks and confirms settled with ``multiple`` in one
frame per I/O round rather than one frame per message.
"""
from __future__ import annotations

import collections
import time

import pika

from bench import amqp
from bench.measure import Throughput, steady_rate

QUEUE_A, QUEUE_B = "bench.raw.a", "bench.raw.b"


class Relay:
    """Consumes A, forwards to B with confirms, acks A on the confirm; consumes and acks B."""

    def __init__(self, url: str, expected: int, prefetch: int):
        self.url, self.expected, self.prefetch = url, expected, prefetch
        self.done_at: list[float] = []  # when each message (of A or B) was acked
        self._forwarded: collections.deque[tuple[int, int]] = collections.deque()  # (publish tag, A tag)
        self._confirmed: set[int] = set()
        self._pub_tag = 0
        self._b_last = 0
        self._b_pending = 0
        self._b_flush_due = False
        self._a_done = self._b_done = 0
        self._error: object = None
        self._closing = False

    def run(self, timeout: float) -> list[float]:
        self._conn = pika.SelectConnection(amqp.params(self.url), on_open_callback=self._opened,
                                           on_open_error_callback=self._fail, on_close_callback=self._fail)
        self._conn.ioloop.call_later(timeout, lambda: self._stop(f"not done within {timeout:.0f} s"))
        self._conn.ioloop.start()
        if self._error is not None:
            raise RuntimeError(f"raw pika relay: {self._error}")
        return self.done_at

    def _fail(self, _conn, error) -> None:
        if not self._closing:
            self._error = self._error or error
        self._conn.ioloop.stop()

    def _stop(self, error: object = None) -> None:
        self._error, self._closing = error, True
        if self._conn.is_open:
            self._conn.close()
        else:
            self._conn.ioloop.stop()

    def _maybe_finish(self) -> None:
        if self._a_done >= self.expected and self._b_done >= self.expected:
            self._stop()

    def _opened(self, conn) -> None:
        conn.channel(on_open_callback=self._publisher_open)

    def _publisher_open(self, ch) -> None:
        self._pub = ch
        ch.confirm_delivery(ack_nack_callback=self._on_confirm,
                            callback=lambda _f: self._conn.channel(on_open_callback=self._consumer_a_open))

    def _consumer_a_open(self, ch) -> None:
        self._a = ch
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: self._subscribe_a())

    def _subscribe_a(self) -> None:
        self._a.basic_consume(QUEUE_A, self._on_a)
        self._conn.channel(on_open_callback=self._consumer_b_open)

    def _consumer_b_open(self, ch) -> None:
        self._b = ch
        ch.basic_qos(prefetch_count=self.prefetch, callback=lambda _f: ch.basic_consume(QUEUE_B, self._on_b))

    # stage A: forward, ack once confirmed

    def _on_a(self, _ch, method, _props, body: bytes) -> None:
        self._pub.basic_publish("", QUEUE_B, body, amqp.PERSISTENT)
        self._pub_tag += 1
        self._forwarded.append((self._pub_tag, method.delivery_tag))

    def _on_confirm(self, frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            self._stop("the broker refused a forwarded message")
            return
        if not method.multiple:
            self._confirmed.add(method.delivery_tag)
        a_tag, acked, now = 0, 0, time.monotonic()
        # Forwards are confirmed in publish order (one queue); ack the confirmed prefix in one frame.
        while self._forwarded and (self._forwarded[0][0] <= method.delivery_tag if method.multiple
                                   else self._forwarded[0][0] in self._confirmed):
            tag, a_tag = self._forwarded.popleft()
            self._confirmed.discard(tag)
            acked += 1
        if acked:
            self._a.basic_ack(a_tag, multiple=True)
            self.done_at.extend([now] * acked)
            self._a_done += acked
            self._maybe_finish()

    # stage B: ack, one frame per I/O round

    def _on_b(self, _ch, method, _props, _body: bytes) -> None:
        self._b_last = method.delivery_tag
        self._b_pending += 1
        if not self._b_flush_due:
            self._b_flush_due = True
            self._conn.ioloop.call_later(0, self._flush_b)

    def _flush_b(self) -> None:
        self._b_flush_due = False
        if not self._b_pending:
            return
        self._b.basic_ack(self._b_last, multiple=True)
        self.done_at.extend([time.monotonic()] * self._b_pending)
        self._b_done += self._b_pending
        self._b_pending = 0
        self._maybe_finish()


def run(url: str, chunks: int, prefetch: int = 200) -> Throughput:
    """Preload ``chunks`` messages on A, then relay them all through B; steady-state messages/s."""
    amqp.declare_quorum(url, [QUEUE_A, QUEUE_B])
    amqp.purge(url, [QUEUE_A, QUEUE_B])
    body = b"x" * 160  # about the size of a Swarm envelope
    amqp.publish(url, ((QUEUE_A, body) for _ in range(chunks)))
    started = time.monotonic()
    done_at = Relay(url, chunks, prefetch).run(timeout=600)
    return steady_rate(done_at, started, procs=1)
