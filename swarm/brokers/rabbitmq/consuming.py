"""Consumers and their deliveries: a channel per consumer, acks coalesced, prefetch changed by consuming again.

Each consumer has a channel of its own, so that its prefetch is its own.
Deliveries that arrive while the connection is pumped wait in
``deliveries`` until ``dispatch`` hands them to their callbacks at the top
of serve's loop, so callbacks never nest. ``RabbitDelivery.ack`` and
``requeue`` may be called from any thread, once (the first wins): the
delivery hands itself to the ``Settler`` that owns the connection, and
``settle`` writes it on the pumping thread together with all the others
settled since (see ``write_settles``).
"""
from __future__ import annotations

import collections
import logging
import math
import threading
from typing import Any, Iterable, Protocol

import pika
import pika.channel
import pika.exceptions
from pika.spec import Basic

from swarm.broker import Callback, Delivery
from swarm.brokers.rabbitmq.channels import Channels
from swarm.brokers.rabbitmq.errors import describe
from swarm.brokers.rabbitmq.url import DEFAULT_CONSUMER_TIMEOUT
from swarm.errors import BackendError

log = logging.getLogger("swarm.brokers.rabbitmq")

CONSUMER_TIMEOUT_SLACK = 60.0  # after a handler's limit: commit effects and get the ack to the broker


def consumer_timeout_note(
    queue: str, handler_timeout: float, consumer_timeout: float = DEFAULT_CONSUMER_TIMEOUT
) -> str | None:
    """What to configure when a handler on ``queue`` can outlast RabbitMQ's consumer_timeout; None if it fits.

    RabbitMQ closes a consumer's channel when a delivery stays unacked longer
    than ``consumer_timeout`` and redelivers all that channel held, and a
    delivery is unacked for its whole handler run: a stage whose handler runs
    that long would churn forever.
    """
    needed = handler_timeout + CONSUMER_TIMEOUT_SLACK
    if consumer_timeout <= 0 or needed < consumer_timeout:
        return None
    seconds = math.ceil(needed * 1.5)
    return (
        f"queue {queue!r}: a handler may hold a delivery {handler_timeout:.0f} s (+{CONSUMER_TIMEOUT_SLACK:.0f} s"
        f" to commit), but RabbitMQ's consumer_timeout is {consumer_timeout:.0f} s: the broker would close the"
        f" channel and redeliver while the handler still runs. Set consumer_timeout = {seconds * 1000} in"
        f" rabbitmq.conf (milliseconds; or, on RabbitMQ >= 3.12, a 'consumer-timeout' policy on {queue!r}) and"
        f" consumer_timeout={seconds} in the broker URL, or lower the stage's timeout."
    )


class Consumer:
    """A ``consume`` registration; ``channel`` and ``tag`` are its subscription on ``connection``, if any."""

    def __init__(self, queue: str, prefetch: int, callback: Callback):
        self.queue, self.prefetch, self.callback = queue, prefetch, callback
        self.active = True  # False once cancelled
        self.connection: Channels | None = None
        self.channel: pika.channel.Channel | None = None
        self.tag: str | None = None
        self.applied_prefetch: int | None = None  # the prefetch the broker has for the subscription


class Settler(Protocol):
    """What owns a connection's deliveries: takes each settled one to the thread that pumps it."""

    def settle(self, delivery: "RabbitDelivery") -> None: ...


class RabbitDelivery(Delivery):
    """A message delivered on one channel of one connection."""

    _claims = threading.Lock()  # the first of ack and requeue wins, whichever threads call them

    def __init__(self, settler: Settler, connection: Channels, channel: pika.channel.Channel, tag: int,
                 queue: str, body: bytes, headers: dict, redelivered: bool):
        self.queue, self.body, self.headers, self.redelivered = queue, body, headers, redelivered
        self.connection, self.channel, self.tag = connection, channel, tag
        self.settled = False
        self.requeued = False
        self._settler = settler

    def ack(self) -> None:
        self._settle(requeue=False)

    def requeue(self) -> None:
        self._settle(requeue=True)

    def _settle(self, requeue: bool) -> None:
        with self._claims:
            if self.settled:
                return
            self.settled, self.requeued = True, requeue
        self._settler.settle(self)


Pending = tuple[Consumer, pika.channel.Channel, Basic.Deliver, pika.BasicProperties, bytes]
_MISSING = object()


class ConsumerChannels:
    """The consumers' channels on one connection, the deliveries waiting for dispatch, and what each holds unacked."""

    def __init__(self, conn: Channels):
        self._conn = conn
        self.deliveries: collections.deque[Pending] = collections.deque()
        self.broken: list[Consumer] = []  # consumers whose channel the broker closed or cancelled alone
        # per consumer channel, the delivery tags not yet settled, in delivery (ascending) order
        self._unacked: dict[pika.channel.Channel, dict[int, None]] = {}

    def subscribe(self, consumer: Consumer) -> None:
        """Give ``consumer`` a channel of its own and start consuming."""
        if consumer.channel is not None and consumer.channel.is_open:
            consumer.channel.close()
        ch = self._conn.channel()
        ch.add_on_close_callback(lambda _ch, reason: self._on_closed(consumer, ch, reason))
        ch.add_on_cancel_callback(lambda _frame: self.broken.append(consumer))
        self._unacked[ch] = {}
        self._consume(consumer, ch)

    def _consume(self, consumer: Consumer, ch: pika.channel.Channel) -> None:
        """Set the channel's QoS to ``consumer.prefetch`` and start ``consumer`` on it."""
        prefetch = consumer.prefetch
        self._conn.request(ch, lambda cb: ch.basic_qos(prefetch_count=prefetch, callback=cb), "setting prefetch")
        unacked = self._unacked[ch]

        def on_message(_ch: Any, method: Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
            unacked[method.delivery_tag] = None
            self.deliveries.append((consumer, ch, method, props, body))

        tag: list[str] = []
        self._conn.request(ch, lambda cb: tag.append(ch.basic_consume(consumer.queue, on_message, callback=cb)),
                           f"consuming from {consumer.queue!r}")
        consumer.connection, consumer.channel, consumer.tag = self._conn, ch, tag[0]
        consumer.applied_prefetch = prefetch

    def reconsume(self, consumer: Consumer) -> None:
        """Apply a changed ``consumer.prefetch`` to its live subscription.

        RabbitMQ applies a consumer's QoS when it starts, and quorum queues have
        no channel-wide QoS, so the consumer is cancelled and started again on
        the same channel: the deliveries in hand stay ackable there. Should
        that fail, the consumer is put on ``broken`` to subscribe anew.
        """
        ch = consumer.channel
        if consumer.connection is not self._conn or ch is None or not ch.is_open or not consumer.tag:
            return  # it starts with the new prefetch when it next subscribes
        try:
            self._conn.request(ch, lambda cb: ch.basic_cancel(consumer.tag, callback=cb),
                               f"cancelling {consumer.queue!r}")
            consumer.tag = None
            self._consume(consumer, ch)
        except (BackendError, pika.exceptions.AMQPError) as exc:
            log.warning("RabbitMQ at %s: changing the prefetch of %r failed (%s); subscribing again",
                        self._conn.label, consumer.queue, describe(exc))
            if consumer not in self.broken:
                self.broken.append(consumer)

    def unsubscribe(self, consumer: Consumer) -> None:
        """Stop ``consumer``'s deliveries on this connection; its channel stays open for the acks of those in hand."""
        ch = consumer.channel
        if consumer.connection is self._conn and ch is not None and ch.is_open and consumer.tag:
            self._conn.request(ch, lambda cb: ch.basic_cancel(consumer.tag, callback=cb),
                               f"cancelling {consumer.queue!r}")
            consumer.tag = None

    def resubscribe_broken(self) -> None:
        """Subscribe again the consumers whose channel the broker closed or cancelled alone."""
        while self.broken:
            consumer = self.broken.pop()
            if consumer.active and consumer.connection is self._conn:
                self.subscribe(consumer)

    def _on_closed(self, consumer: Consumer, ch: pika.channel.Channel, reason: BaseException) -> None:
        self._unacked.pop(ch, None)  # the broker requeued what the channel held
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and consumer.channel is ch:
            log.warning("RabbitMQ at %s closed the channel consuming %r (%s); resubscribing",
                        self._conn.label, consumer.queue, describe(reason))
            self.broken.append(consumer)

    def dispatch(self, settler: Settler) -> None:
        """Hand the waiting deliveries to their callbacks; ``settler`` takes their acks."""
        while self.deliveries:
            consumer, ch, method, props, body = self.deliveries.popleft()
            if not consumer.active:
                self._reject(ch, method.delivery_tag)  # cancelled: back to the queue for another worker
                continue
            if consumer.channel is not ch:
                continue  # from a channel since replaced: the broker redelivers it
            delivery = RabbitDelivery(settler, self._conn, ch, method.delivery_tag, consumer.queue, body,
                                      dict(props.headers or {}), bool(method.redelivered))
            try:
                consumer.callback(delivery)
            except Exception:
                # A broken callback must not stop the worker; the delivery goes back (and a quorum
                # queue's delivery limit ends a loop of it in the dead-letter queue).
                log.exception("consumer callback for %r failed; requeueing the delivery", consumer.queue)
                delivery.requeue()

    def _reject(self, ch: pika.channel.Channel, tag: int) -> None:
        """Send an undispatched delivery back to its queue."""
        if ch.is_open and self._unacked.get(ch, {}).pop(tag, _MISSING) is not _MISSING:
            ch.basic_reject(tag, requeue=True)

    def settle(self, deliveries: Iterable[RabbitDelivery]) -> None:
        """Write the acks and requeues of ``deliveries`` (all of this connection), in as few frames as is safe."""
        by_channel: dict[pika.channel.Channel, dict[int, bool]] = {}
        for delivery in deliveries:
            by_channel.setdefault(delivery.channel, {})[delivery.tag] = delivery.requeued
        for ch, settled in by_channel.items():
            unacked = self._unacked.get(ch)
            if unacked is not None and ch.is_open:  # else closed: the broker requeued them itself
                write_settles(ch, unacked, settled)


def write_settles(ch: pika.channel.Channel, unacked: dict[int, None], settled: dict[int, bool]) -> None:
    """Ack or requeue (``settled[tag]`` True) the tags of ``ch`` that it holds unacked, and forget them.

    A multiple ack settles every unacked tag up to its own on the broker, so it
    may only cover a run of the oldest unacked tags that are all being acked
    now. A tag still held by a handler or being requeued ends the run; the
    rest go out one frame each. A tag not held here is skipped: settling it
    again would make the broker close the channel.
    """
    last, run = 0, 0
    for tag in unacked:
        if settled.get(tag, True):  # held, or requeued
            break
        last, run = tag, run + 1
    if run > 1:
        ch.basic_ack(last, multiple=True)
    for tag, requeue in settled.items():
        if unacked.pop(tag, _MISSING) is _MISSING:
            continue
        if requeue:
            ch.basic_nack(tag, requeue=True)
        elif run <= 1 or tag > last:
            ch.basic_ack(tag)
