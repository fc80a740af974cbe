"""The RabbitMQ broker (``amqp://user:pass@host:port/vhost?option=value``) over pika 1.4.

URL
    The vhost is URL-encoded (``%2F`` for ``/``). Every pika ``URLParameters``
    query option works (``heartbeat``, ``connection_attempts``,
    ``socket_timeout``...) except ``ssl_options``: TLS takes Swarm's options
    below. ``blocked_connection_timeout`` defaults to 60 s: without it a
    publish waits forever while a memory or disk alarm blocks publishers.
    Swarm adds these options:

    ``delivery_limit=20``     deliveries a quorum stage queue allows a message
                              before the broker dead-letters it to ``Q.dlq``
    ``reply_timeout=60``      seconds a call waits for the broker's confirms
                              or replies before raising ``BackendError``
    ``consumer_timeout=1800`` the server's ``consumer_timeout`` in seconds (AMQP
                              cannot read it; ``0`` means disabled), used by
                              ``consumer_timeout_note``

    and, with ``amqps://`` only (TLS, port 5671 by default):

    ``ssl_ca=PATH``           PEM CA certificate(s) the server's certificate must
                              chain to (default: the system's CA store)
    ``ssl_cert=PATH``         a client certificate (PEM), for a server that asks
    ``ssl_key=PATH``          its key (PEM, unencrypted), unless in ``ssl_cert``'s file
    ``ssl_server_name=NAME``  the name the server's certificate must carry
                              (default: the URL's host); also sent as SNI
    ``ssl_verify_identity=true``  ``false`` skips the name check; the certificate
                              chain is checked in any case

Topology (``declare``; idempotent)
    ``Q``             the stage queue: a quorum queue (classic durable on a server
                      without quorum queues) with ``x-delivery-limit``, dead-lettering
                      through the default exchange to ``Q.dlq``; at-least-once
                      dead-lettering on RabbitMQ >= 3.10, so the broker keeps a
                      message until ``Q.dlq`` has confirmed it.
    ``Q.dlq``         dead letters: ours carry ``x-swarm-reason``, the broker's
                      carry ``x-death``.
    ``Q.retry.<ms>``  delay tiers of 1 s to 2048 s, powers of two. Each has a fixed
                      ``x-message-ttl`` and dead-letters back to ``Q``. A delayed
                      publish goes to the tier nearest the delay asked for (within a
                      factor of 1.41; longer delays take the last tier). Fixed TTLs
                      matter because RabbitMQ expires messages only at the head of a
                      queue: with per-message TTLs a short delay would wait behind a
                      long one. Nothing waits unacked in a worker meanwhile.

    A classic stage queue has no delivery limit: only the ledger's attempt count
    ends a loop there. Changing ``delivery_limit`` for an existing queue makes
    ``declare`` fail with the broker's "inequivalent arg" message: drain and
    delete the queue, then declare it again.

    ``publish`` refuses a batch that names a queue not known to exist before it
    sends any of it (checked once per name); a queue deleted later makes the
    broker return the message (``mandatory``), and the publish raises.

Threading
    A pika connection is not thread safe. The broker owns one connection (pika's
    asynchronous ``SelectConnection``) and exactly one thread pumps its I/O loop at
    any time:

    * while ``serve`` runs, its thread is the I/O thread. A call from any other
      thread is queued as a job, the loop is woken with the I/O loop's
      ``add_callback_threadsafe``, and the caller waits on a future.
      Publishes, acks and requeues, the per-message path, are cheaper: each is
      appended to a list of its kind, and only the append that finds the list
      empty wakes the loop, which takes the whole list in one pass. A publish
      waits on the one future its confirms resolve: the loop writes the batch and
      goes on serving while the confirms come back, so batches from many pool
      threads are in flight at once. An ack or requeue does not wait at all.
    * acks leave in as few frames as is safe: per channel, one ``multiple`` ack
      for the run of oldest unacked deliveries that are all being acked now, one
      frame each for the rest. A requeue, or a delivery a handler still holds,
      ends the run, so a multiple ack never covers a message meant to go back.
    * while nothing serves (the master), the calling thread pumps the loop itself
      for the length of the call; other threads wait their turn.
    * a call made on the I/O thread (from a consumer callback) runs inline and
      pumps the loop while it waits; an ack or requeue made there is written once
      the callback returns, with those of the pool threads. Deliveries that arrive
      meanwhile are queued and dispatched after the callback returns, so callbacks
      never nest.

    Why not ``BlockingConnection``: its publish waits for each message's confirm in
    turn, one round trip per message; writing a whole batch and then waiting for
    its confirms is more than ten times faster. Why not a second connection for
    publishing: DESIGN wants one connection per process, and marshalling keeps
    every channel on one thread without locks around pika.

    Heartbeats flow while the loop is pumped. ``serve`` pumps continuously (waking
    at least every 0.2 s), so handlers busy on pool threads never starve them; a
    consumer callback itself must return quickly (hand the work to a pool).
    While nothing serves, nothing answers heartbeats: a connection the broker
    dropped meanwhile is noticed by the next call, which reconnects and runs once
    more. A publish run twice may duplicate messages; deterministic ids make that
    harmless.

Reconnect
    ``serve`` outlives connection loss (broker restart, network, missed heartbeats,
    blocked longer than ``blocked_connection_timeout``): calls in flight fail with
    ``BackendError``, then it waits (0.5 s doubling to 30 s, jittered), reconnects,
    re-declares the queues this broker declared and re-subscribes its consumers. A
    worker started while RabbitMQ is down simply waits. The broker redelivers what
    the lost connection held unacked; settling those old deliveries does nothing.
    A consumer channel the broker closes alone (``consumer_timeout``) is reopened
    without dropping the connection; a consumer whose queue was deleted reconnects,
    which declares the queue again. A callback that raises is logged and its
    delivery requeued (a quorum queue's delivery limit ends a loop of that).
    ``cancel`` sends deliveries already prefetched but not yet dispatched back to
    the queue.

Long handlers and ``consumer_timeout``
    RabbitMQ closes a consumer's channel when one of its deliveries stays unacked
    longer than ``consumer_timeout`` (30 min by default) and redelivers everything
    that channel held, so a stage whose handler runs that long churns forever.
    A delivery is unacked for the whole handler run, so each stage's ``timeout``
    plus ``CONSUMER_TIMEOUT_SLACK`` must fit. ``RabbitBroker.consumer_timeout_note``
    says what to configure when it does not: raise ``consumer_timeout`` in
    rabbitmq.conf (milliseconds, any version) or, from RabbitMQ 3.12, set a
    ``consumer-timeout`` policy on the stage's queues, and pass the new value as
    ``consumer_timeout=`` in the broker URL. Retries never wait unacked: they go
    through the delay tiers.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import logging
import math
import random
import re
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Sequence

import pika
import pika.channel
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed
from pika.spec import Basic

from swarm import tls as tls_support
from swarm.urls import redact
from swarm.broker import (
    REASON_HEADER, Broker, Callback, Delivery, Store, dead_letter_from, dead_letter_parts, dead_letter_queue,
)
from swarm.errors import BackendError, BackendRefused, ConfigError

log = logging.getLogger(__name__)

DEFAULT_CONSUMER_TIMEOUT = 1800.0  # RabbitMQ's own default, in seconds
CONSUMER_TIMEOUT_SLACK = 60.0  # after a handler's limit: commit effects and get the ack to the broker
DELAY_TIERS_MS: tuple[int, ...] = tuple(1000 * 2**k for k in range(12))  # 1 s .. 2048 s
RECONNECT_FIRST, RECONNECT_CAP = 0.5, 30.0  # seconds

_OPTIONS = {"delivery_limit": 20, "reply_timeout": 60.0, "consumer_timeout": DEFAULT_CONSUMER_TIMEOUT}
_TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_server_name", "ssl_verify_identity")
_BLOCKED_CONNECTION_TIMEOUT = 60.0
_PUBLISH_WINDOW = 4096  # unconfirmed messages before a batch lets confirms catch up (bounds memory)
_TICK = 0.2  # how often serve wakes to look at its stop event
_PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
_DEATH_REASONS = {
    "delivery_limit": "delivery limit exceeded",
    "rejected": "rejected by a consumer",
    "expired": "expired",
    "maxlen": "queue length limit exceeded",
}


def retry_queue(queue: str, tier_ms: int) -> str:
    """The delay queue of ``queue`` whose messages wait ``tier_ms`` milliseconds."""
    return f"{queue}.retry.{tier_ms}"


def delay_tier(seconds: float) -> int:
    """The delay tier (ms) nearest to ``seconds`` by ratio, within the tiers there are."""
    k = round(math.log2(max(seconds, 0.001)))
    return DELAY_TIERS_MS[min(max(k, 0), len(DELAY_TIERS_MS) - 1)]


def consumer_timeout_note(
    queue: str, handler_timeout: float, consumer_timeout: float = DEFAULT_CONSUMER_TIMEOUT
) -> str | None:
    """What to configure when a handler on ``queue`` can outlast RabbitMQ's consumer_timeout; None if it fits."""
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


# -- configuration ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Options:
    params: pika.URLParameters
    delivery_limit: int
    reply_timeout: float
    consumer_timeout: float


def _parse_url(url: str) -> _Options:
    """pika's parameters plus Swarm's own query options; ``ConfigError`` names what is wrong."""
    where = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    except ValueError as e:
        raise ConfigError(f"broker: cannot parse {where!r}: {e}") from None
    if "ssl_options" in query:
        raise ConfigError(f"broker: option ssl_options is not supported; use amqps:// with ssl_ca, ssl_cert "
                          f"and ssl_key (in {where})")
    ours = {name: query.pop(name)[-1] for name in list(query) if name in _OPTIONS}
    tls = {name: query.pop(name)[-1] for name in list(query) if name in _TLS_OPTIONS}
    rest = parts._replace(query=urllib.parse.urlencode(query, doseq=True))
    try:
        params = pika.URLParameters(urllib.parse.urlunsplit(rest))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"broker: {_scrub(str(e), parts.password)} (in {where})") from None
    if "blocked_connection_timeout" not in query:
        params.blocked_connection_timeout = _BLOCKED_CONNECTION_TIMEOUT
    params.ssl_options = _ssl_options(parts.scheme, params.host, tls, where)
    values: dict[str, Any] = {}
    for name, default in _OPTIONS.items():
        raw = ours.get(name)
        try:
            values[name] = type(default)(raw) if raw is not None else default
        except ValueError:
            raise ConfigError(f"broker: option {name}={raw!r} is not a number (in {where})") from None
        if values[name] < 0 or (values[name] == 0 and name != "consumer_timeout"):
            raise ConfigError(f"broker: option {name} must be positive (in {where})")
    return _Options(params, **values)


def _ssl_options(scheme: str, host: str, tls: dict[str, str], where: str) -> pika.SSLOptions | None:
    """The TLS settings of an ``amqps://`` URL; None for ``amqp://``, which takes no TLS option."""
    if scheme.lower() != "amqps":
        if tls:
            raise ConfigError(f"broker: option {', '.join(sorted(tls))} needs an amqps:// URL (in {where})")
        return None
    check = tls_support.flag("broker", "ssl_verify_identity", tls.get("ssl_verify_identity"), default=True)
    context = tls_support.client_context("broker", tls, check_hostname=check)
    # pika gives server_hostname to wrap_socket: it is the name checked and the SNI sent.
    return pika.SSLOptions(context, tls.get("ssl_server_name") or host)


def _scrub(text: str, secret: str | None) -> str:
    """A library's error ``text`` without the password, should it ever quote it.

    Secrets shorter than six characters are left alone: they collide with ordinary words.
    """
    if not secret or len(secret) < 6:
        return text
    for form in {secret, urllib.parse.unquote(secret)}:
        text = text.replace(form, "***")
    return text


def _describe(error: BaseException | None) -> str:
    """A short reason for a pika connection or channel error."""
    error = _root(error)
    if isinstance(error, pika.exceptions.ProbableAuthenticationError) and _closed_by_broker(error):
        return f"login refused; check the user and password ({error})"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError) and _closed_by_broker(error):
        return f"access refused; check that the vhost exists and the user may use it ({error})"
    if isinstance(error, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)):
        return f"the connection was lost while logging in ({error})"
    if isinstance(error, (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)):
        return f"closed by the broker: {error.reply_code} {error.reply_text}"
    if isinstance(error, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        return f"closed: {error.reply_code} {error.reply_text}"
    if isinstance(error, pika.exceptions.AMQPHeartbeatTimeout):
        return "no heartbeat from the broker"
    if isinstance(error, pika.exceptions.ConnectionBlockedTimeout):
        return "blocked by a broker resource alarm for longer than blocked_connection_timeout"
    return f"{type(error).__name__}: {error}" if error is not None else "closed"


def _describe_connect(error: BaseException | None) -> str:
    """Why a connection could not be opened: a TLS failure says so, with the options to check."""
    tls = tls_support.failure(_root(error))
    if tls is None:
        return _describe(error)
    if tls.startswith("TLS verification"):
        return f"{tls} (check the URL's ssl_ca and ssl_server_name)"
    return tls


def _refused(error: BaseException) -> bool:
    """The broker refused the login or the vhost, or its certificate did not verify: retrying will not help."""
    root = _root(error)
    refusals = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)
    if isinstance(root, refusals):
        return _closed_by_broker(root)
    return (tls_support.failure(root) or "").startswith("TLS verification")


def _closed_by_broker(error: BaseException) -> bool:
    """Whether pika's guess of a refused login or vhost rests on the broker's own close (403 or 530).

    pika makes the same guess when the connection is merely lost during the
    handshake, as when RabbitMQ is shutting down or restarting: an outage.
    """
    return str(error).startswith("ConnectionClosedByBroker: (")


def _root(error: BaseException | None) -> BaseException | None:
    """The error under pika's connection-workflow wrappers."""
    while True:
        if isinstance(error, AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(getattr(error, "exception", None), BaseException):
            error = error.exception  # a connector phase error
        elif type(error) is pika.exceptions.AMQPConnectionError and error.args \
                and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            return error


def _server_version(properties: dict) -> tuple[int, int]:
    """(major, minor) of a RabbitMQ server; (0, 0) for anything else, which gets classic queues."""
    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    match = re.match(r"(\d+)\.(\d+)", text(properties.get("version")))
    if "rabbitmq" not in text(properties.get("product")).lower() or not match:
        return (0, 0)
    return int(match.group(1)), int(match.group(2))


class _Topology:
    """The queues behind one stage queue, with arguments for the server's features."""

    def __init__(self, version: tuple[int, int], delivery_limit: int):
        self.quorum = version >= (3, 8)
        self.quorum_ttl = version >= (3, 10)  # message TTL and at-least-once dead-lettering in quorum queues
        self.delivery_limit = delivery_limit

    def queues(self, queue: str) -> list[tuple[str, dict]]:
        """(name, arguments) to declare for ``queue``, each dead-letter target before its source."""
        dlq = dead_letter_queue(queue)
        stage = self._kind(self.quorum) | self._dead_letter_to(dlq, self.quorum)
        if self.quorum:
            stage["x-delivery-limit"] = self.delivery_limit
        out = [(dlq, self._kind(self.quorum)), (queue, stage)]
        for ms in DELAY_TIERS_MS:
            tier = self._kind(self.quorum_ttl) | {"x-message-ttl": ms} | self._dead_letter_to(queue, self.quorum_ttl)
            out.append((retry_queue(queue, ms), tier))
        return out

    @staticmethod
    def _kind(quorum: bool) -> dict:
        return {"x-queue-type": "quorum"} if quorum else {}

    def _dead_letter_to(self, target: str, quorum: bool) -> dict:
        args: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}
        if quorum and self.quorum_ttl:
            # the default at-most-once drops a message if the target does not take it
            args |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return args


# -- one connection --------------------------------------------------------


class _Lost(BackendError):
    """The connection is gone; the call may succeed on a new one."""


class _Batch:
    """Messages published together; ``future`` resolves when the broker has confirmed all of them."""

    def __init__(self, size: int, error: Callable[[str], BackendError],
                 future: concurrent.futures.Future | None = None):
        self.remaining = size
        self._error = error
        self.keys: set[str] = set()
        self.unroutable: set[str] = set()
        self.nacked = 0
        self.future: concurrent.futures.Future = future or concurrent.futures.Future()

    def fail(self, error: BackendError) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    def finish(self) -> None:
        if self.unroutable:
            names = ", ".join(sorted(self.unroutable))
            self.fail(self._error(f"no queue named {names}: the broker returned the message; declare it first"))
        elif self.nacked:
            self.fail(self._error(f"the broker refused {self.nacked} message(s) (nack); publish again"))
        elif not self.future.done():
            self.future.set_result(None)


class _Consumer:
    """A ``consume`` registration; ``channel`` is its channel on the current connection."""

    def __init__(self, queue: str, prefetch: int, callback: Callback):
        self.queue, self.prefetch, self.callback = queue, prefetch, callback
        self.active = True
        self.link: _Link | None = None
        self.channel: pika.channel.Channel | None = None
        self.tag: str | None = None


_Pending = tuple[_Consumer, pika.channel.Channel, Basic.Deliver, pika.BasicProperties, bytes]
# (channel, delivery tag, requeue?, called once the frame is written)
_Settle = tuple[pika.channel.Channel, int, bool, Callable[[], None]]


class _Link:
    """One AMQP connection and its channels; only the thread pumping it may touch it."""

    def __init__(self, opts: _Options, label: str, secret: str | None):
        self.label, self._secret = label, secret
        self.reply_timeout = opts.reply_timeout
        self.lost: str | None = None
        self.open_error: BaseException | None = None  # why the connection could not be opened
        self.deliveries: collections.deque[_Pending] = collections.deque()
        self.broken: list[_Consumer] = []  # consumers whose channel the broker closed or cancelled
        self._why: dict[pika.channel.Channel, BaseException] = {}  # why each closed channel closed
        self._ops: pika.channel.Channel | None = None
        self._got: list = []
        self._pub: pika.channel.Channel | None = None
        self._next_tag = 1
        self._unconfirmed: dict[int, _Batch] = {}
        self._order: collections.deque[int] = collections.deque()
        self._batches: set[_Batch] = set()
        # per consumer channel, the delivery tags not yet settled, in delivery (ascending) order
        self._unacked: dict[pika.channel.Channel, dict[int, None]] = {}
        opened: list = []
        self.conn = pika.SelectConnection(
            opts.params, on_open_callback=opened.append,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_close,
        )
        self.conn.ioloop.activate_poller()  # what IOLoop.start() would do; we pump with poll() instead
        try:
            self.pump_until(lambda: bool(opened), timeout=None)
        except BackendError as exc:
            self.conn.ioloop.close()
            if self.open_error is not None and _refused(self.open_error):
                raise BackendRefused(str(exc)) from None  # a login or vhost refused: not an outage
            raise
        self.topology = _Topology(_server_version(self.conn.server_properties or {}), opts.delivery_limit)

    def error(self, text: str, kind: type[BackendError] = BackendError) -> BackendError:
        return kind(f"RabbitMQ at {self.label}: {_scrub(text, self._secret)}")

    # -- pumping

    def pump(self) -> None:
        """Wait for I/O or the next timer once and handle what came."""
        if self.lost is not None:
            raise self.error(self.lost, _Lost)
        self.conn.ioloop.poll()
        self.conn.ioloop.process_timeouts()

    def pump_until(self, done: Callable[[], bool], timeout: float | None = -1) -> None:
        """Pump until ``done()``; ``timeout`` -1 means the reply timeout, None none."""
        limit = self.reply_timeout if timeout == -1 else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while not done():
            if deadline is not None and time.monotonic() > deadline:
                raise self.error(f"no reply within {limit:.0f} s")
            self.pump()

    def flush(self) -> None:
        """Write out what is buffered (an ack, say) without waiting for anything else."""
        if self.lost is None:
            self.conn.ioloop.call_later(0, _noop)  # makes the poll below return at once
            try:
                self.pump()
            except _Lost:
                pass  # what was asked of the connection is done; the loss shows on the next call

    def _on_open_error(self, _conn: Any, error: BaseException) -> None:
        self.open_error = error
        self.lost = f"cannot connect: {_describe_connect(error)}"

    def _on_close(self, _conn: Any, error: BaseException) -> None:
        self.lost = self.lost or _describe(error)
        why = f"connection lost before the broker confirmed ({self.lost}); publish again"
        self._fail_batches(self.error(why, _Lost))

    def shut(self) -> None:
        """Close the connection (unacked deliveries go back to their queues) and release its loop."""
        try:
            if self.lost is None and not self.conn.is_closed:
                if self.conn.is_open:
                    self.conn.close()
                self.pump_until(lambda: self.conn.is_closed, timeout=5.0)
        except (BackendError, pika.exceptions.AMQPError, OSError):
            pass  # closing anyway
        finally:
            self.lost = self.lost or "closed"
            self.conn.ioloop.close()

    # -- channels and requests

    def channel(self) -> pika.channel.Channel:
        opened: list = []
        ch = self.conn.channel(on_open_callback=opened.append)
        ch.add_on_close_callback(self._on_channel_closed)
        self.pump_until(lambda: bool(opened) or ch.is_closed)
        if not opened:
            raise self._closed_error(ch, "opening a channel")
        return ch

    def _on_channel_closed(self, ch: pika.channel.Channel, reason: BaseException) -> None:
        self._why[ch] = reason
        self._unacked.pop(ch, None)  # the broker requeued what the channel held

    def _closed_error(self, ch: pika.channel.Channel, what: str) -> BackendError:
        """Why ``ch`` closed under ``what``, worded for the operator."""
        if self.lost is not None:
            return self.error(self.lost, _Lost)
        reason = self._why.pop(ch, None)
        code = getattr(reason, "reply_code", None)
        if code == 404:
            return self.error(f"{what}: the queue is not declared ({_describe(reason)})")
        if code == 406:
            return self.error(f"{what}: {_describe(reason)}. The queue exists with other arguments:"
                              " delete it or make them match")
        return self.error(f"{what}: {_describe(reason)}")

    def request(self, ch: pika.channel.Channel, start: Callable[[Callable[..., None]], Any], what: str) -> tuple:
        """Start an asynchronous channel call and pump until its reply; the reply's callback arguments."""
        replies: list[tuple] = []
        start(lambda *args: replies.append(args))
        self.pump_until(lambda: bool(replies) or ch.is_closed)
        if not replies:
            raise self._closed_error(ch, what)
        return replies[0]

    def _ops_channel(self) -> pika.channel.Channel:
        if self._ops is None or self._ops.is_closed:
            self._ops = self.channel()
            # pika reports Basic.GetEmpty only to callbacks registered for it
            self._ops.add_callback(lambda _frame: self._got.append(None), [Basic.GetEmpty], one_shot=False)
        return self._ops

    def declare(self, queue: str) -> None:
        for name, args in self.topology.queues(queue):
            ch = self._ops_channel()
            self.request(ch, lambda cb: ch.queue_declare(name, durable=True, arguments=args, callback=cb),
                         f"declaring queue {name!r}")

    def ready(self, name: str) -> int:
        """Messages ready on ``name`` (a passive declare)."""
        ch = self._ops_channel()
        (frame,) = self.request(ch, lambda cb: ch.queue_declare(name, passive=True, callback=cb), f"queue {name!r}")
        return frame.method.message_count

    def purge(self, name: str) -> int:
        ch = self._ops_channel()
        (frame,) = self.request(ch, lambda cb: ch.queue_purge(name, callback=cb), f"purging {name!r}")
        return frame.method.message_count

    def get(self, name: str) -> tuple[pika.channel.Channel, int, pika.BasicProperties, bytes] | None:
        """One message from ``name``, held unacked until ``answer``; None when the queue is empty."""
        ch = self._ops_channel()
        self._got = got = []
        ch.basic_get(name, lambda _ch, method, props, body: got.append((method, props, body)))
        self.pump_until(lambda: bool(got) or ch.is_closed)
        if not got:
            raise self._closed_error(ch, f"reading {name!r}")
        if got[0] is None:
            return None
        method, props, body = got[0]
        return ch, method.delivery_tag, props, body

    def answer(self, ch: pika.channel.Channel, tag: int, ack: bool) -> None:
        """Ack a message ``get`` returned, or give it back to its queue; on a closed channel the broker has it back."""
        if not ch.is_open:
            return
        if ack:
            ch.basic_ack(tag)
        else:
            ch.basic_nack(tag, requeue=True)

    # -- publishing with confirms

    def send(self, messages: Sequence[tuple[str, bytes, pika.BasicProperties]],
             future: concurrent.futures.Future | None = None) -> concurrent.futures.Future:
        """Write a batch and return the future its confirms resolve (``future`` if given); does not wait."""
        batch = _Batch(len(messages), self.error, future)
        if not messages:
            batch.finish()
            return batch.future
        ch = self._publisher()
        self._batches.add(batch)
        for key, body, props in messages:
            if ch.is_closed:
                break  # the close callback has failed the batch
            ch.basic_publish("", key, body, props, mandatory=True)
            self._unconfirmed[self._next_tag] = batch
            self._order.append(self._next_tag)
            self._next_tag += 1
            batch.keys.add(key)
            if len(self._unconfirmed) >= _PUBLISH_WINDOW:
                self.pump_until(lambda: len(self._unconfirmed) < _PUBLISH_WINDOW // 2 or ch.is_closed)
        return batch.future

    def _publisher(self) -> pika.channel.Channel:
        if self._pub is not None and self._pub.is_open:
            return self._pub
        ch = self.channel()
        ch.add_on_close_callback(self._on_publisher_closed)
        ch.add_on_return_callback(self._on_return)
        self.request(ch, lambda cb: ch.confirm_delivery(ack_nack_callback=self._on_confirm, callback=cb),
                     "enabling publisher confirms")
        self._pub, self._next_tag = ch, 1
        return ch

    def _on_publisher_closed(self, _ch: pika.channel.Channel, reason: BaseException) -> None:
        # closed with the connection, unless the broker closed just this channel
        kind = BackendError if isinstance(reason, pika.exceptions.ChannelClosedByBroker) else _Lost
        why = f"publishing channel closed before the broker confirmed ({_describe(reason)})"
        self._fail_batches(self.error(why, kind))

    def _on_return(self, _ch: Any, method: Basic.Return, _props: Any, _body: bytes) -> None:
        # A return names no delivery tag; it comes before the ack of its message, so it belongs
        # to a batch still open. Blaming every open batch that used the key errs on the safe side.
        for batch in self._batches:
            if method.routing_key in batch.keys:
                batch.unroutable.add(method.routing_key)

    def _on_confirm(self, frame: Any) -> None:
        method, nack = frame.method, isinstance(frame.method, Basic.Nack)
        if method.multiple:
            while self._order and self._order[0] <= method.delivery_tag:
                self._confirm(self._order.popleft(), nack)
        else:
            self._confirm(method.delivery_tag, nack)
            while self._order and self._order[0] not in self._unconfirmed:
                self._order.popleft()

    def _confirm(self, tag: int, nack: bool) -> None:
        batch = self._unconfirmed.pop(tag, None)
        if batch is None:
            return
        batch.nacked += nack
        batch.remaining -= 1
        if batch.remaining == 0:
            self._batches.discard(batch)
            batch.finish()

    def confirmed(self) -> bool:
        """No batch waits for confirms."""
        return not self._batches

    def _fail_batches(self, error: BackendError) -> None:
        for batch in self._batches:
            batch.fail(error)
        self._batches.clear()
        self._unconfirmed.clear()
        self._order.clear()

    # -- consuming

    def subscribe(self, consumer: _Consumer) -> None:
        """Give ``consumer`` its own channel (so its prefetch is its own) and start consuming."""
        if consumer.channel is not None and consumer.channel.is_open:
            consumer.channel.close()
        ch = self.channel()
        ch.add_on_close_callback(lambda _ch, reason: self._on_consumer_closed(consumer, ch, reason))
        ch.add_on_cancel_callback(lambda _frame: self.broken.append(consumer))
        self._unacked[ch] = {}
        self._consume(consumer, ch)

    def _consume(self, consumer: _Consumer, ch: pika.channel.Channel) -> None:
        """Set the channel's QoS to ``consumer.prefetch`` and start ``consumer`` on it."""
        self.request(ch, lambda cb: ch.basic_qos(prefetch_count=consumer.prefetch, callback=cb), "setting prefetch")
        unacked = self._unacked[ch]

        def on_message(_ch: Any, method: Basic.Deliver, props: pika.BasicProperties, body: bytes) -> None:
            unacked[method.delivery_tag] = None
            self.deliveries.append((consumer, ch, method, props, body))  # dispatched at the top of serve's loop

        tag: list[str] = []
        self.request(ch, lambda cb: tag.append(ch.basic_consume(consumer.queue, on_message, callback=cb)),
                     f"consuming from {consumer.queue!r}")
        consumer.link, consumer.channel, consumer.tag = self, ch, tag[0]

    def reconsume(self, consumer: _Consumer) -> None:
        """Apply a changed ``consumer.prefetch`` on the live channel.

        RabbitMQ applies a consumer's QoS when it starts, and quorum queues have
        no channel-wide QoS, so the consumer is cancelled and started again on
        the same channel: the deliveries in hand stay ackable there.
        """
        ch = consumer.channel
        if consumer.link is not self or ch is None or not ch.is_open or not consumer.tag:
            return  # it starts with the new prefetch when it next subscribes
        try:
            self.request(ch, lambda cb: ch.basic_cancel(consumer.tag, callback=cb), f"cancelling {consumer.queue!r}")
            consumer.tag = None
            self._consume(consumer, ch)
        except (BackendError, pika.exceptions.AMQPError) as exc:
            log.warning("RabbitMQ at %s: changing the prefetch of %r failed (%s); subscribing again",
                        self.label, consumer.queue, _describe(exc))
            if consumer not in self.broken:
                self.broken.append(consumer)  # serve's loop subscribes it again
            raise

    def _on_consumer_closed(self, consumer: _Consumer, ch: pika.channel.Channel, reason: BaseException) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker) and consumer.channel is ch:
            log.warning("RabbitMQ at %s closed the channel consuming %r (%s); resubscribing",
                        self.label, consumer.queue, _describe(reason))
            self.broken.append(consumer)

    def reject(self, ch: pika.channel.Channel, tag: int) -> None:
        """Send an undispatched delivery back to its queue."""
        if ch.is_open and self._unacked.get(ch, {}).pop(tag, _MISSING) is not _MISSING:
            ch.basic_reject(tag, requeue=True)

    def settle(self, settles: Iterable[_Settle]) -> None:
        """Write acks and requeues, as few frames as the broker's view of each channel allows."""
        by_channel: dict[pika.channel.Channel, dict[int, tuple[bool, Callable[[], None]]]] = {}
        for ch, tag, requeue, written in settles:
            by_channel.setdefault(ch, {})[tag] = (requeue, written)
        for ch, settled in by_channel.items():
            unacked = self._unacked.get(ch)
            if unacked is not None and ch.is_open:  # else closed: the broker requeued them itself
                self._settle_on(ch, unacked, settled)

    @staticmethod
    def _settle_on(ch: pika.channel.Channel, unacked: dict[int, None],
                   settled: dict[int, tuple[bool, Callable[[], None]]]) -> None:
        # A multiple ack settles every unacked tag up to its own on the broker, so it may only
        # cover a run of the oldest unacked tags that are all being acked now. A tag still held
        # by a handler or being requeued ends the run; the rest go out one frame each.
        last, run = 0, 0
        for tag in unacked:
            entry = settled.get(tag)
            if entry is None or entry[0]:
                break
            last, run = tag, run + 1
        if run > 1:
            ch.basic_ack(last, multiple=True)
        hooks = []
        for tag, (requeue, written) in settled.items():
            if unacked.pop(tag, _MISSING) is _MISSING:
                continue  # not held on this channel: settling it again would close the channel
            if requeue:
                ch.basic_nack(tag, requeue=True)
            elif run <= 1 or tag > last:
                ch.basic_ack(tag)
            hooks.append(written)
        for written in hooks:  # after every frame: a failing hook must not strand a delivery unsettled
            try:
                written()
            except Exception:
                log.exception("a settle hook failed")

    def unsubscribe(self, consumer: _Consumer) -> None:
        ch = consumer.channel
        if consumer.link is self and ch is not None and ch.is_open and consumer.tag:
            self.request(ch, lambda cb: ch.basic_cancel(consumer.tag, callback=cb), f"cancelling {consumer.queue!r}")


def _noop() -> None:
    pass


_MISSING = object()


def _backoff(failures: int) -> float:
    cap = min(RECONNECT_CAP, RECONNECT_FIRST * 2 ** max(0, failures - 1))
    return random.uniform(cap / 2, cap)


def _reason(headers: dict | None) -> str:
    """Why a message is in a dead-letter queue: ours, or RabbitMQ's latest x-death."""
    headers = headers or {}
    ours = headers.get(REASON_HEADER)
    if ours is not None:
        return ours.decode("utf-8", "replace") if isinstance(ours, bytes) else str(ours)
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        why = deaths[0].get("reason", "")
        why = why.decode() if isinstance(why, bytes) else str(why)
        return _DEATH_REASONS.get(why, why or "unknown")
    return "unknown"


# -- the broker ------------------------------------------------------------


class RabbitDelivery(Delivery):
    """A message delivered on one channel of one connection."""

    def __init__(self, broker: "RabbitBroker", link: _Link, channel: pika.channel.Channel, tag: int,
                 queue: str, body: bytes, headers: dict, redelivered: bool):
        self.queue, self.body, self.headers, self.redelivered = queue, body, headers, redelivered
        self._broker, self._link, self._channel, self._tag = broker, link, channel, tag
        self._settled = False
        self._requeue = False

    def ack(self) -> None:
        if self._claim(requeue=False):
            self._settle(_noop)

    def requeue(self) -> None:
        if self._claim(requeue=True):
            self._settle(_noop)

    def _claim(self, requeue: bool) -> bool:
        """The first of ``ack`` and ``requeue`` wins; later calls do nothing."""
        with self._broker._settle_lock:
            if self._settled:
                return False
            self._settled, self._requeue = True, requeue
            return True

    def _settle(self, written: Callable[[], None]) -> None:
        """Hand the settlement to the I/O thread, which calls ``written`` once its frame is written."""
        self._broker._queue_settle(self, written)


class RabbitBroker(Broker):
    """A RabbitMQ connection; see the module docstring for the threading model."""

    def __init__(self, url: str):
        self._opts = _parse_url(url)
        self._label = redact(url)
        self._secret = urllib.parse.urlsplit(url).password
        self._cv = threading.Condition()
        self._link: _Link | None = None
        self._io_thread: threading.Thread | None = None  # runs serve
        self._driver: threading.Thread | None = None  # pumps the loop for one call while nothing serves
        self._jobs: collections.deque[tuple[Callable[[], None], concurrent.futures.Future]] = collections.deque()
        self._consumers: list[_Consumer] = []
        self._declared: list[str] = []
        self._known: set[str] = set()  # queues seen to exist, so publish can refuse unknown ones up front
        # Acks and publishes from pool threads wait here for the I/O thread, which takes them all
        # at once; only the first of a run wakes it (one write to its wake-up socket).
        self._settle_lock = threading.Lock()
        self._settles: list[tuple[RabbitDelivery, Callable[[], None]]] = []
        self._sends: list[tuple[list[tuple[str, bytes, pika.BasicProperties]], concurrent.futures.Future]] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitBroker({self._label!r})"

    # -- the role

    def declare(self, queues: Iterable[str]) -> None:
        names = list(dict.fromkeys(queues))
        self._call(lambda link: [link.declare(q) for q in names])
        with self._cv:
            self._declared += [q for q in names if q not in self._declared]
        self._known.update(names, map(dead_letter_queue, names))

    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        messages = [(queue, bytes(body)) for queue, body in messages]
        if not messages:
            return
        self._require({queue for queue, _ in messages})
        if delay > 0:
            tier = delay_tier(delay)
            messages = [(retry_queue(queue, tier), body) for queue, body in messages]
        self._publish([(key, body, _PERSISTENT) for key, body in messages])

    def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        dlq = dead_letter_queue(queue)
        self._require({dlq})
        stored, headers = dead_letter_parts(body, reason)
        props = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, headers=headers)
        self._publish([(dlq, stored, props)])

    def consume(self, queue: str, prefetch: int, callback: Callback) -> None:
        self._require({queue})
        with self._cv:
            self._consumers.append(_Consumer(queue, max(1, prefetch), callback))
            serving = self._io_thread is not None
        if serving:
            self._call(self._subscribe_all, connect=False)

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        prefetch = max(1, prefetch)
        with self._cv:
            changed = [c for c in self._consumers if c.queue == queue and c.prefetch != prefetch]
            for consumer in changed:
                consumer.prefetch = prefetch
        for consumer in changed:  # detached: the caller (a worker's housekeeping) must not wait on the broker
            self._call(lambda link, c=consumer: link.reconsume(c), connect=False, detach=True)

    def serve(self, stop: threading.Event) -> None:
        if self._closed:
            return
        self._enter_serve()
        failures = 0
        try:
            while not (stop.is_set() or self._closed):
                try:
                    link = self._live_link() or self._connect()
                    self._restore(link)
                    if failures:
                        log.info("RabbitMQ at %s: reconnected", self._label)
                    failures = 0
                    self._loop(link, stop)
                except (BackendError, pika.exceptions.AMQPError, OSError) as e:
                    failures += 1
                    wait = _backoff(failures)
                    log.warning("%s; reconnecting in %.1f s", self._said(e), wait)
                    self._drop_link()
                    self._pause(stop, wait)
        finally:
            self._leave_serve()

    def _pause(self, stop: threading.Event, seconds: float) -> None:
        """Sleep between reconnects, cut short by ``stop`` or ``close``."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or self._closed) and time.monotonic() < deadline:
            stop.wait(min(_TICK, deadline - time.monotonic()))

    def cancel(self) -> None:
        with self._cv:
            consumers, self._consumers = self._consumers, []
            for consumer in consumers:
                consumer.active = False
        self._call(lambda link: [link.unsubscribe(c) for c in consumers], connect=False)

    def depth(self, queue: str, delayed: bool = True) -> int:
        names = [queue] + ([retry_queue(queue, ms) for ms in DELAY_TIERS_MS] if delayed else [])
        return self._call(lambda link: sum(link.ready(name) for name in names))

    def take_dead(self, queue: str, store: Store, limit: int = 1000) -> int:
        name = dead_letter_queue(queue)
        moved = 0
        while moved < limit:
            got = self._call(lambda link: link.get(name))
            if got is None:
                break
            ch, tag, props, body = got
            try:
                store(dead_letter_from(queue, body, props.headers, _reason(props.headers)))
            except BaseException:
                self._call(lambda link: link.answer(ch, tag, ack=False), connect=False)
                raise
            self._call(lambda link: link.answer(ch, tag, ack=True), connect=False)
            moved += 1
        if moved:
            self._call(lambda link: link.ready(name))  # a round trip on the channel: its acks have been applied
        return moved

    def purge(self, queue: str) -> int:
        return self._call(lambda link: link.purge(queue))

    def close(self) -> None:
        me = threading.current_thread()
        with self._cv:
            if self._closed:
                return
            self._closed = True
            if self._io_thread is me:
                return  # the loop shuts the connection once the callback returns
            self._wake()  # a serving loop notices, shuts the connection and returns
            while self._io_thread is not None or self._driver not in (None, me):
                self._cv.wait()
            link, self._link = self._link, None
        if link is not None:
            link.shut()

    def ping(self) -> str:
        """Connect now if not connected, declaring nothing: the server's product and version."""
        props = self._call(lambda link: dict(link.conn.server_properties or {}))
        said = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                for v in (props.get("product"), props.get("version")) if v]
        return " ".join(said) or "an AMQP server"

    def consumer_timeout_note(self, queue: str, handler_timeout: float) -> str | None:
        """What to configure when a handler on ``queue`` can outlast the server's consumer_timeout; None if it fits.

        The server's value comes from the URL's ``consumer_timeout`` option (default 1800 s).
        """
        return consumer_timeout_note(queue, handler_timeout, self._opts.consumer_timeout)

    # -- publishing

    def _require(self, queues: set[str]) -> None:
        """Refuse a whole batch before publishing any of it when a queue does not exist."""
        unknown = queues - self._known
        if unknown:
            self._call(lambda link: [link.ready(q) for q in sorted(unknown)])
            self._known |= unknown

    def _publish(self, messages: list[tuple[str, bytes, pika.BasicProperties]]) -> None:
        future = self._queue_send(messages)
        if future is None:
            self._call(lambda link: link.send(messages), confirm=True)
        else:
            self._await(future, confirm=False)

    def _queue_send(self, messages: list[tuple[str, bytes, pika.BasicProperties]]
                    ) -> concurrent.futures.Future | None:
        """Queue a batch for the serving loop and return its confirms' future; None: not serving, call here."""
        me = threading.current_thread()
        with self._cv:
            if self._closed or self._io_thread in (None, me):
                return None
            if self._live_link() is None:
                raise BackendError(f"RabbitMQ at {self._label}: not connected; serve is reconnecting, try again")
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._sends.append((messages, future))
            if len(self._sends) == 1:
                self._wake()
        return future

    def _drain_sends(self, link: _Link) -> None:
        """Write every queued batch; their confirms resolve the publishers' futures later."""
        if not self._sends:  # unlocked peek: a batch queued after it woke the loop, which comes back here
            return
        with self._cv:
            sends, self._sends = self._sends, []
        for messages, future in sends:
            try:
                self._run(link, functools.partial(_Link.send, messages=messages, future=future), confirm=False)
            except BaseException as e:  # the publisher re-raises it on its own thread
                if not future.done():
                    future.set_exception(e)

    def _fail_sends(self, error: BackendError) -> None:
        with self._cv:
            sends, self._sends = self._sends, []
        for _, future in sends:
            if not future.done():
                future.set_exception(error)

    # -- settling deliveries

    def _queue_settle(self, delivery: RabbitDelivery, written: Callable[[], None]) -> None:
        with self._settle_lock:
            first = not self._settles
            self._settles.append((delivery, written))
        io_thread = self._io_thread  # read after the append: a loop leaving serve drains once more
        if io_thread is None:
            self._call(self._drain_settles, connect=False, detach=True)
        elif first and io_thread is not threading.current_thread():
            self._wake()  # the loop itself drains after its callbacks, before it polls

    def _drain_settles(self, link: _Link) -> None:
        if not self._settles:
            return
        with self._settle_lock:
            settles, self._settles = self._settles, []
        # a delivery from an earlier connection is no longer held: the broker redelivers it
        current = [(d._channel, d._tag, d._requeue, written) for d, written in settles if d._link is link]
        try:
            link.settle(current)
        except (pika.exceptions.AMQPError, OSError) as e:
            # the channel or connection is going: the broker redelivers what was not settled
            log.debug("RabbitMQ at %s: settling deliveries failed: %s", self._label, _describe(e))

    # -- running calls on the thread that owns the connection

    def _call(self, fn: Callable[[_Link], Any], *, connect: bool = True, confirm: bool = False,
              detach: bool = False) -> Any:
        """Run ``fn(link)`` where the connection lives and return its result.

        ``confirm``: ``fn`` returns a future of broker confirms to wait for. ``connect=False``:
        without a live connection there is nothing to do. ``detach``: don't wait for a queued job.
        """
        me = threading.current_thread()
        if me is self._io_thread or me is self._driver:
            return self._here(fn, connect, confirm, retry=False)
        with self._cv:
            while True:
                if self._closed:
                    if connect:
                        raise BackendError(f"RabbitMQ at {self._label}: the broker connection is closed")
                    return None
                if self._io_thread is not None:
                    job = self._post(fn, connect)
                    break
                if self._driver is None:
                    self._driver, job = me, None
                    break
                self._cv.wait()
        if job is None:
            try:
                return self._here(fn, connect, confirm, retry=True)
            finally:
                with self._cv:
                    self._driver = None
                    self._cv.notify_all()
        if detach:
            return None
        return self._await(job, confirm)

    def _here(self, fn: Callable[[_Link], Any], connect: bool, confirm: bool, retry: bool) -> Any:
        """Run ``fn`` on this thread, which pumps the loop; once more on a new connection if an idle one died."""
        if self._closed and connect:
            raise BackendError(f"RabbitMQ at {self._label}: the broker connection is closed")
        link = self._live_link()
        fresh = link is None
        if link is None:
            if not connect:
                return None
            if threading.current_thread() is self._io_thread:
                raise BackendError(f"RabbitMQ at {self._label}: not connected; serve is reconnecting")
            link = self._connect()
        try:
            return self._run(link, fn, confirm)
        except _Lost:
            if fresh or not retry:
                raise
            log.info("RabbitMQ at %s: the idle connection was lost; reconnecting", self._label)
            self._drop_link()
            return self._run(self._connect(), fn, confirm)

    def _run(self, link: _Link, fn: Callable[[_Link], Any], confirm: bool) -> Any:
        """``fn(link)`` on the pumping thread, with pika's exceptions turned into ``BackendError``."""
        try:
            result = fn(link)
            if confirm:
                link.pump_until(result.done)
                result = result.result()
        except (pika.exceptions.AMQPError, OSError) as e:
            gone = link.lost is not None or not link.conn.is_open
            raise link.error(_describe(e), _Lost if gone else BackendError) from None
        if threading.current_thread() is not self._io_thread:
            link.flush()  # no loop runs after us to write what fn left buffered
        return result

    def _post(self, fn: Callable[[_Link], Any], connect: bool) -> concurrent.futures.Future:
        """Queue ``fn`` for the I/O thread (caller holds ``_cv``)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        link = self._live_link()
        if link is None:
            if connect:
                raise BackendError(f"RabbitMQ at {self._label}: not connected; serve is reconnecting, try again")
            future.set_result(None)
            return future

        def job() -> None:
            try:
                future.set_result(self._run(link, fn, confirm=False))
            except BaseException as e:  # the caller re-raises it on its own thread
                future.set_exception(e)

        self._jobs.append((job, future))
        self._wake()
        return future

    def _await(self, job: concurrent.futures.Future, confirm: bool) -> Any:
        timeout = self._opts.reply_timeout
        try:
            result = job.result(timeout)
            return result.result(timeout) if confirm else result
        except concurrent.futures.TimeoutError:
            raise BackendError(f"RabbitMQ at {self._label}: no reply within {timeout:.0f} s") from None

    def _said(self, error: BaseException) -> str:
        """An error as logged: ours already name the (redacted) URL; pika's get it added."""
        if isinstance(error, BackendError):
            return str(error)
        return f"RabbitMQ at {self._label}: {_scrub(_describe(error), self._secret)}"

    def _wake(self) -> None:
        link = self._link
        if link is not None and link.lost is None:
            link.conn.ioloop.add_callback_threadsafe(_noop)

    def _live_link(self) -> _Link | None:
        link = self._link
        return link if link is not None and link.lost is None else None

    def _connect(self) -> _Link:
        try:
            link = _Link(self._opts, self._label, self._secret)
        except (pika.exceptions.AMQPError, OSError) as e:
            why = _scrub(_describe_connect(e), self._secret)
            kind = BackendRefused if _refused(e) else BackendError
            raise kind(f"RabbitMQ at {self._label}: cannot connect: {why}") from None
        with self._cv:
            self._link = link
        return link

    def _drop_link(self) -> None:
        """Forget the connection; queued calls fail, consumers will subscribe again on the next one."""
        with self._cv:
            link, self._link = self._link, None
            jobs = list(self._jobs)
            self._jobs.clear()
        error = BackendError(f"RabbitMQ at {self._label}: connection lost; try again")
        for _, future in jobs:
            if not future.done():
                future.set_exception(error)
        self._fail_sends(error)
        with self._settle_lock:
            self._settles.clear()  # all from the lost connection: nothing to settle
        if link is not None:
            link.shut()

    # -- serving

    def _enter_serve(self) -> None:
        me = threading.current_thread()
        with self._cv:
            if self._closed:
                raise BackendError(f"RabbitMQ at {self._label}: the broker connection is closed")
            if self._io_thread is not None:
                raise BackendError(f"RabbitMQ at {self._label}: serve is already running on another thread")
            while self._driver is not None:
                self._cv.wait()
            self._io_thread = me

    def _leave_serve(self) -> None:
        """Run what was queued for the loop, then hand the connection to direct calls (or close it)."""
        me = threading.current_thread()
        with self._cv:
            self._io_thread, self._driver = None, me
        try:
            self._run_jobs()
            link = self._live_link()
            if link is None:
                self._fail_sends(BackendError(f"RabbitMQ at {self._label}: connection lost; try again"))
            else:
                self._drain_sends(link)
                self._drain_settles(link)
                link.pump_until(link.confirmed)  # their publishers wait on threads that no longer pump
                link.flush()
            if self._closed:
                with self._cv:
                    link, self._link = self._link, None
                if link is not None:
                    link.shut()
        except (BackendError, pika.exceptions.AMQPError, OSError) as e:
            log.warning("%s", self._said(e))
        finally:
            with self._cv:
                self._driver = None
                self._cv.notify_all()

    def _restore(self, link: _Link) -> None:
        """Declare again what this broker declared and subscribe its consumers on ``link``."""
        with self._cv:
            declared = list(self._declared)
        for queue in declared:
            link.declare(queue)
        self._subscribe_all(link)

    def _subscribe_all(self, link: _Link) -> None:
        with self._cv:
            consumers = [c for c in self._consumers if c.active and c.link is not link]
        for consumer in consumers:
            link.subscribe(consumer)

    def _loop(self, link: _Link, stop: threading.Event) -> None:
        ioloop = link.conn.ioloop
        timer: list = []

        def tick() -> None:  # bounds each poll so that a set stop event is seen soon
            timer[:] = [ioloop.call_later(_TICK, tick)]

        tick()
        try:
            while True:
                self._run_jobs()
                self._drain_sends(link)
                self._dispatch(link)
                self._drain_settles(link)  # after the callbacks, which may have settled some
                while link.broken:
                    consumer = link.broken.pop()
                    if consumer.active and consumer.link is link:
                        link.subscribe(consumer)
                if stop.is_set() or self._closed:
                    return
                link.pump()
        finally:
            if link.lost is None:
                ioloop.remove_timeout(timer[0])

    def _run_jobs(self) -> None:
        while self._jobs:
            job, _ = self._jobs.popleft()
            job()

    def _dispatch(self, link: _Link) -> None:
        """Hand queued deliveries to their callbacks, at the top of the loop so that callbacks never nest."""
        while link.deliveries:
            consumer, ch, method, props, body = link.deliveries.popleft()
            if not consumer.active:
                link.reject(ch, method.delivery_tag)  # cancelled: back to the queue for another worker
                continue
            if consumer.channel is not ch:
                continue  # from a channel since replaced: the broker redelivers it
            delivery = RabbitDelivery(self, link, ch, method.delivery_tag, consumer.queue, body,
                                      dict(props.headers or {}), bool(method.redelivered))
            try:
                consumer.callback(delivery)
            except Exception:
                # A broken callback must not stop the worker; the delivery goes back (and a quorum
                # queue's delivery limit ends a loop of it in the dead-letter queue).
                log.exception("consumer callback for %r failed; requeueing the delivery", consumer.queue)
                delivery.requeue()
