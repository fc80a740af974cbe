"""One AMQP connection (pika's asynchronous ``SelectConnection``) and its channels.

A pika connection is not thread safe, so exactly one thread pumps a
``Connection`` at a time and only that thread touches it, its channels, its
``publisher`` and its ``consumers``; ``wake`` alone may be called from any
thread. Which thread that is belongs to the brokers: serve's thread for
``RabbitBroker``, the caller for ``BlockingRabbitBroker``.

The thread drives pika's I/O loop one step at a time (``pump``) instead of
``IOLoop.start()``, so that it can stop when its call has its reply
(``pump_until``). Heartbeats flow only while the connection is pumped.

A connection that publishes while a resource alarm is on (memory, disk) is
blocked by the broker, which then reads nothing more from it, acks included,
until the alarm clears: ``blocked`` says so (``connection.blocked``), and the
publisher parks what it is given meanwhile (see ``publishing``).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TypeVar

import pika
import pika.channel
import pika.exceptions
from pika.spec import Basic

from swarm.brokers.rabbitmq.consuming import ConsumerChannels
from swarm.brokers.rabbitmq.errors import ConnectionLost, describe, describe_connect_error, is_refusal
from swarm.brokers.rabbitmq.publishing import Publisher
from swarm.brokers.rabbitmq.topology import Topology, server_version
from swarm.brokers.rabbitmq.url import BrokerOptions
from swarm.errors import BackendError, BackendRefused

log = logging.getLogger("swarm.brokers.rabbitmq")

T = TypeVar("T")
Message = tuple[pika.channel.Channel, int, pika.BasicProperties, bytes]  # a basic_get: channel, tag, properties, body


def _nothing() -> None:
    pass


class Connection:
    """One AMQP connection and its channels; only the thread pumping it may touch it."""

    def __init__(self, opts: BrokerOptions):
        """Open a connection, pumping until the broker has accepted it (see ``open``)."""
        self.opts = opts
        self.label = opts.label
        self.lost: str | None = None  # why the connection is gone; None while it is up
        self.blocked: str | None = None  # while a resource alarm blocks the connection: the broker's reason
        self.blocked_wait = opts.blocked_wait
        self._blocked_at = 0.0
        self._open_error: BaseException | None = None
        self._close_reasons: dict[pika.channel.Channel, BaseException] = {}
        self._ops: pika.channel.Channel | None = None
        self._got: list = []
        self.publisher = Publisher(self)
        self.consumers = ConsumerChannels(self)
        opened: list = []
        self._pika = pika.SelectConnection(
            opts.params, on_open_callback=opened.append,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_close,
        )
        self._pika.ioloop.activate_poller()  # what IOLoop.start() would do; we pump with poll() instead
        self._pika.add_on_connection_blocked_callback(self._on_blocked)
        self._pika.add_on_connection_unblocked_callback(self._on_unblocked)
        try:
            self.pump_until(lambda: bool(opened), timeout=None)
        except BackendError as exc:
            self._pika.ioloop.close()
            if self._open_error is not None and is_refusal(self._open_error):
                raise BackendRefused(str(exc)) from None  # a login or vhost refused: not an outage
            raise
        self.topology = Topology(server_version(self._pika.server_properties or {}), opts.delivery_limit)

    @classmethod
    def open(cls, opts: BrokerOptions) -> "Connection":
        """A new open connection; ``BackendRefused`` when retrying cannot help, else ``BackendError``."""
        try:
            return cls(opts)
        except (pika.exceptions.AMQPError, OSError) as e:
            kind = BackendRefused if is_refusal(e) else BackendError
            raise opts.error(f"cannot connect: {describe_connect_error(e)}", kind) from None

    def error(self, text: str, kind: type[BackendError] = BackendError) -> BackendError:
        return self.opts.error(text, kind)

    @property
    def live(self) -> bool:
        return self.lost is None

    def server_properties(self) -> dict:
        return dict(self._pika.server_properties or {})

    # -- pumping

    def pump(self) -> None:
        """Wait for I/O or the next timer once and handle what came."""
        if self.lost is not None:
            raise self.error(self.lost, ConnectionLost)
        self._pika.ioloop.poll()
        self._pika.ioloop.process_timeouts()

    def pump_until(self, done: Callable[[], bool], timeout: float | None = -1) -> None:
        """Pump until ``done()``; ``timeout`` -1 means the reply timeout, None none."""
        limit = self.opts.reply_timeout if timeout == -1 else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                raise self.error(f"no reply within {limit:.0f} s")
            self.pump()

    def flush(self) -> None:
        """Write out what is buffered (an ack, say) without waiting for anything else."""
        if self.lost is None:
            self._pika.ioloop.call_later(0, _nothing)  # makes the poll below return at once
            try:
                self.pump()
            except ConnectionLost:
                pass  # what was asked of the connection is done; the loss shows on the next call

    def call_later(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the pumping thread after ``seconds``, if the connection is still up."""
        if self.lost is None:
            self._pika.ioloop.call_later(seconds, fn)

    def wake(self) -> None:
        """Make the pumping thread's wait return soon; safe from any thread."""
        if self.lost is None:
            self._pika.ioloop.add_callback_threadsafe(_nothing)

    @contextlib.contextmanager
    def waking_every(self, seconds: float) -> Iterator[None]:
        """Within the block, ``pump`` returns at least every ``seconds`` (to look at a stop event, say)."""
        ioloop = self._pika.ioloop
        timer: list = []

        def tick() -> None:
            timer[:] = [ioloop.call_later(seconds, tick)]

        tick()
        try:
            yield
        finally:
            if self.lost is None:
                ioloop.remove_timeout(timer[0])

    def call(self, fn: Callable[["Connection"], T], wait: bool = True) -> T | Any:
        """``fn(self)`` with pika's exceptions turned into ``BackendError``.

        With ``wait``, a future ``fn`` returns (a publish's confirms) is waited
        for by pumping, and what is left buffered is written before returning.
        """
        try:
            result = fn(self)
            if wait and isinstance(result, concurrent.futures.Future):
                # a publish's confirms: a batch parked while blocked resolves within the blocked wait
                self.pump_until(result.done, timeout=self.opts.reply_timeout + self.blocked_wait)
                result = result.result()
        except (pika.exceptions.AMQPError, OSError) as e:
            gone = self.lost is not None or not self._pika.is_open
            raise self.error(describe(e), ConnectionLost if gone else BackendError) from None
        if wait:
            self.flush()
        return result

    def _on_blocked(self, _conn: Any, frame: Any) -> None:
        reason = getattr(frame.method, "reason", "") or "a resource alarm"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        self.blocked, self._blocked_at = str(reason), time.monotonic()
        log.warning("RabbitMQ at %s blocks publishing: %s; publishes wait for it to clear, each up to %.0f s",
                    self.label, self.blocked, self.blocked_wait)

    def _on_unblocked(self, _conn: Any, _frame: Any) -> None:
        if self.blocked is None:
            return
        log.warning("RabbitMQ at %s unblocked publishing after %.1f s", self.label,
                    time.monotonic() - self._blocked_at)
        self.blocked = None
        self.publisher.resume()

    def _on_open_error(self, _conn: Any, error: BaseException) -> None:
        self._open_error = error
        self.lost = f"cannot connect: {describe_connect_error(error)}"

    def _on_close(self, _conn: Any, error: BaseException) -> None:
        self.lost = self.lost or describe(error)
        why = f"connection lost before the broker confirmed ({self.lost}); publish again"
        self.publisher.fail_all(self.error(why, ConnectionLost))

    def shut(self) -> None:
        """Close the connection (unacked deliveries go back to their queues) and release its loop."""
        try:
            if self.lost is None and not self._pika.is_closed:
                if self._pika.is_open:
                    self._pika.close()
                self.pump_until(lambda: self._pika.is_closed, timeout=5.0)
        except (BackendError, pika.exceptions.AMQPError, OSError):
            pass  # closing anyway
        finally:
            self.lost = self.lost or "closed"
            self._pika.ioloop.close()

    # -- channels and requests

    def channel(self) -> pika.channel.Channel:
        opened: list = []
        ch = self._pika.channel(on_open_callback=opened.append)
        ch.add_on_close_callback(self._on_channel_closed)
        self.pump_until(lambda: bool(opened) or ch.is_closed)
        if not opened:
            raise self.closed_error(ch, "opening a channel")
        return ch

    def _on_channel_closed(self, ch: pika.channel.Channel, reason: BaseException) -> None:
        self._close_reasons[ch] = reason

    def closed_error(self, ch: pika.channel.Channel, what: str) -> BackendError:
        """Why ``ch`` closed under ``what``, worded for the operator."""
        if self.lost is not None:
            return self.error(self.lost, ConnectionLost)
        reason = self._close_reasons.pop(ch, None)
        code = getattr(reason, "reply_code", None)
        if code == 404:
            return self.error(f"{what}: the queue is not declared ({describe(reason)})")
        if code == 406:
            return self.error(f"{what}: {describe(reason)}. The queue exists with other arguments:"
                              " delete it or make them match")
        return self.error(f"{what}: {describe(reason)}")

    def request(self, ch: pika.channel.Channel, start: Callable[[Callable[..., None]], Any], what: str) -> tuple:
        """Start an asynchronous channel call and pump until its reply; the reply's callback arguments."""
        replies: list[tuple] = []
        start(lambda *args: replies.append(args))
        self.pump_until(lambda: bool(replies) or ch.is_closed)
        if not replies:
            raise self.closed_error(ch, what)
        return replies[0]

    # -- queues, on a channel of their own

    def _ops_channel(self) -> pika.channel.Channel:
        if self._ops is None or self._ops.is_closed:
            self._ops = self.channel()
            # pika reports Basic.GetEmpty only to callbacks registered for it
            self._ops.add_callback(lambda _frame: self._got.append(None), [Basic.GetEmpty], one_shot=False)
        return self._ops

    def declare(self, queues: Iterable[str], bounds: Mapping[str, int] | None = None) -> None:
        """Declare each stage queue with its dead-letter and delay queues, and its bound if any (``topology``)."""
        bounds = bounds or {}
        for name, args in (spec for queue in queues for spec in self.topology.queues(queue, bounds.get(queue))):
            self._declare_one(name, args)

    def _declare_one(self, name: str, args: dict) -> None:
        """Declare queue ``name``; ``BackendRefused`` when it exists with other arguments (waiting cannot help)."""
        ch = self._ops_channel()
        try:
            self.request(ch, lambda cb: ch.queue_declare(name, durable=True, arguments=args, callback=cb),
                         f"declaring queue {name!r}")
        except BackendError as exc:
            if "inequivalent arg" in str(exc):
                raise BackendRefused(str(exc)) from None
            raise

    def ready(self, name: str) -> int:
        """Messages ready on ``name`` (a passive declare: raises when there is no such queue)."""
        ch = self._ops_channel()
        (frame,) = self.request(ch, lambda cb: ch.queue_declare(name, passive=True, callback=cb), f"queue {name!r}")
        return frame.method.message_count

    def purge(self, name: str) -> int:
        ch = self._ops_channel()
        (frame,) = self.request(ch, lambda cb: ch.queue_purge(name, callback=cb), f"purging {name!r}")
        return frame.method.message_count

    def get(self, name: str) -> Message | None:
        """One message from ``name``, held unacked until ``answer``; None when the queue is empty."""
        ch = self._ops_channel()
        self._got = got = []
        ch.basic_get(name, lambda _ch, method, props, body: got.append((method, props, body)))
        self.pump_until(lambda: bool(got) or ch.is_closed)
        if not got:
            raise self.closed_error(ch, f"reading {name!r}")
        if got[0] is None:
            return None
        method, props, body = got[0]
        return ch, method.delivery_tag, props, body

    def answer(self, ch: pika.channel.Channel, tag: int, ack: bool) -> None:
        """Ack a message ``get`` returned, or give it back to its queue.

        On a closed channel, or one of another connection, there is nothing to
        do: the broker has the message back, or will have once that closes.
        """
        if not ch.is_open or ch.connection is not self._pika:
            return
        if ack:
            ch.basic_ack(tag)
        else:
            ch.basic_nack(tag, requeue=True)
