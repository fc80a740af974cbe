"""``RabbitBroker``: the serving broker of a worker process, one connection pumped by the thread in ``serve``.

That thread, the I/O thread, alone touches the connection. A call from any
other thread is queued for it, and the caller waits on the call's future;
only the call that finds the queue empty wakes the loop (the I/O
loop's ``add_callback_threadsafe``), which takes the whole queue in one
pass. A publish's future is the one its confirms resolve, so the loop writes
the batch and goes on serving while they come back: batches of many pool
threads are in flight at once. An ack or requeue does not wait at all. A
call made on the I/O thread itself, from a consumer callback, runs inline
and pumps while it waits.

While nothing serves, calls go through a ``BlockingRabbitBroker`` of its
own (a worker declares its queues before it serves), whose connection
``serve`` takes over when it starts. Consumers registered, cancelled or given a new
prefetch meanwhile are brought up to date when serve starts; acks made
meanwhile are written by the next serve, or by ``close``.

Publishing (``publish``, ``dead_letter``) has a connection of its own, a
``RabbitBroker`` without consumers served by a thread of its own while this
one serves: RabbitMQ stops reading from a connection that publishes while a
resource alarm is on, and acks on the consumers' connection must go on.
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import random
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import pika.exceptions

from swarm.broker import Callback
from swarm.brokers.rabbitmq.blocking import BlockingRabbitBroker
from swarm.brokers.rabbitmq.connection import Connection
from swarm.brokers.rabbitmq.consuming import Consumer, RabbitDelivery
from swarm.brokers.rabbitmq.errors import describe
from swarm.brokers.rabbitmq.operations import RabbitOperations
from swarm.brokers.rabbitmq.url import BrokerOptions, parse_url
from swarm.errors import BackendError

log = logging.getLogger("swarm.brokers.rabbitmq")

T = TypeVar("T")
RECONNECT_FIRST, RECONNECT_CAP = 0.5, 30.0  # seconds
TICK = 0.2  # how often serve wakes to look at its stop event
PUBLISH_RECONNECT_WAIT = 5.0  # seconds a publish waits for the publishing connection to come back


def reconnect_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed connections in a row: doubling to a cap, jittered."""
    cap = min(RECONNECT_CAP, RECONNECT_FIRST * 2 ** max(0, failures - 1))
    return random.uniform(cap / 2, cap)


class _QueuedCall:
    """A call queued for the I/O thread; ``future`` gets its result (a publish's once it is confirmed)."""

    def __init__(self, fn: Callable[[Connection], Any]):
        self.fn = fn
        self.future: concurrent.futures.Future = concurrent.futures.Future()

    def run(self, conn: Connection) -> None:
        try:
            result = conn.call(self.fn, wait=False)
        except BaseException as e:  # the caller re-raises it on its own thread
            self.fail(e)
            return
        if isinstance(result, concurrent.futures.Future):
            result.add_done_callback(self._resolve)
        else:
            self.future.set_result(result)

    def _resolve(self, confirms: concurrent.futures.Future) -> None:
        error = confirms.exception()
        if error is not None:
            self.fail(error)
        else:
            self.future.set_result(confirms.result())

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def _resolved(result: Any = None) -> concurrent.futures.Future:
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(result)
    return future


class RabbitBroker(RabbitOperations):
    """A RabbitMQ connection served by one thread; every method but ``serve`` is safe from any thread.

    ``publishing_apart``: publishes go through a second connection (see above). ``reconnect_wait``:
    seconds a call waits for serve to reconnect before it fails (the publishing connection's: a blip
    passes unnoticed); 0, at once.
    """

    def __init__(self, url: str | BrokerOptions, *, publishing_apart: bool = True, reconnect_wait: float = 0.0):
        super().__init__(parse_url(url) if isinstance(url, str) else url)
        self._out = RabbitBroker(self._opts, publishing_apart=False, reconnect_wait=PUBLISH_RECONNECT_WAIT) \
            if publishing_apart else None
        self._out_serving: threading.Thread | None = None
        self._out_stop = threading.Event()
        self._direct = BlockingRabbitBroker(self._opts)  # for calls while nothing serves
        self._cv = threading.Condition()
        self._conn: Connection | None = None  # serve's connection
        self._io_thread: threading.Thread | None = None  # in serve: the only thread touching _conn
        self._serving = False  # calls go to the I/O thread (no longer once serve winds down)
        self._starting = False  # serve is taking over the connection calls made before it used
        self._reconnect_wait = reconnect_wait  # seconds a call waits for serve to reconnect before it fails
        self._queued: collections.deque[_QueuedCall] = collections.deque()
        self._settle_lock = threading.Lock()
        self._settles: list[RabbitDelivery] = []
        self._consumers: list[Consumer] = []
        self._declared: list[str] = []
        self._closed = False

    # -- the role

    def declare(self, queues: Iterable[str], bounds: Mapping[str, int] | None = None) -> None:
        names = list(dict.fromkeys(queues))
        super().declare(names, bounds)
        with self._cv:
            self._declared += [q for q in names if q not in self._declared]
        if self._out is not None:
            self._out.bounds.update(self.bounds)  # what its publishes must keep to

    def publish(self, messages: Sequence[tuple[str, bytes]], delay: float = 0.0) -> None:
        if self._out is None:
            return super().publish(messages, delay)
        return self._out.publish(messages, delay)

    def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        if self._out is None:
            return super().dead_letter(queue, body, reason)
        return self._out.dead_letter(queue, body, reason)

    def consume(self, queue: str, prefetch: int, callback: Callback) -> None:
        self._require({queue})
        with self._cv:
            self._consumers.append(Consumer(queue, max(1, prefetch), callback))
        self._update_consumers(wait=True)

    def set_prefetch(self, queue: str, prefetch: int) -> None:
        prefetch = max(1, prefetch)
        with self._cv:
            changed = [c for c in self._consumers if c.queue == queue and c.prefetch != prefetch]
            for consumer in changed:
                consumer.prefetch = prefetch
        if changed:  # not waited for: the caller (a worker's housekeeping) must not wait on the broker
            self._update_consumers(wait=False)

    def cancel(self, queue: str | None = None) -> None:
        with self._cv:
            for consumer in self._consumers:
                if queue is None or consumer.queue == queue:
                    consumer.active = False
        self._update_consumers(wait=True)

    def serve(self, stop: threading.Event) -> None:
        """Run the I/O loop until ``stop`` is set, reconnecting after broker failures (see ``_serve_until``)."""
        if self._closed:
            return
        self._start_serving()
        self._start_publishing()
        try:
            self._serve_until(stop)
        finally:
            self._finish_serving()
            self._stop_publishing()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
        with self._cv:
            if self._closed:
                return
            self._closed = True
            if self._io_thread is threading.current_thread():
                return  # from a consumer callback: the loop shuts the connection once it returns
            self._wake()  # a serving loop notices, winds down and returns
            while self._io_thread is not None:
                self._cv.wait()
        self._shut()

    # -- where calls run

    def call(self, fn: Callable[[Connection], T], *, connect: bool = True) -> T | Any:
        if threading.current_thread() is self._io_thread:
            return self._call_inline(fn, connect)
        future = self._queue_call(fn, connect)
        if future is None:
            return self._direct.call(fn, connect=connect)
        return self._result_of(future)

    def _call_inline(self, fn: Callable[[Connection], T], connect: bool) -> T | None:
        """On the I/O thread (a consumer callback): run ``fn`` now, pumping until its reply."""
        conn = self._live_connection()
        if conn is None:
            if connect:
                raise self._opts.error("not connected; serve is reconnecting")
            return None
        return conn.call(fn)

    def _queue_call(self, fn: Callable[[Connection], Any], connect: bool) -> concurrent.futures.Future | None:
        """Queue ``fn`` for the I/O thread and return its future; None when nothing serves."""
        with self._cv:
            if self._starting and threading.current_thread() is not self._io_thread:
                self._cv.wait_for(lambda: not self._starting, timeout=self._opts.reply_timeout)
            if self._closed and not connect:
                return _resolved()
            if self._closed or not self._serving:
                return None  # the blocking broker answers, or says it is closed
            if self._live_connection() is None and connect and self._reconnect_wait:
                # the publishing connection: a call waits a moment for serve to reconnect (a blip, a restart)
                self._cv.wait_for(lambda: self._closed or not self._serving or self._live_connection() is not None,
                                  timeout=self._reconnect_wait)
                if self._closed or not self._serving:
                    return None
            if self._live_connection() is None:
                if connect:
                    raise self._opts.error("not connected; serve is reconnecting, try again")
                return _resolved()
            call = _QueuedCall(fn)
            self._queued.append(call)
            if len(self._queued) == 1:  # else the loop, woken by the first, takes this one in the same pass
                self._wake()
            return call.future

    def _result_of(self, future: concurrent.futures.Future) -> Any:
        timeout = self._opts.reply_timeout + self._opts.blocked_wait  # a publish parked while blocked: see publishing
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise self._opts.error(f"no reply within {timeout:.0f} s") from None

    def _wake(self) -> None:
        conn = self._conn
        if conn is not None:
            conn.wake()

    def _live_connection(self) -> Connection | None:
        conn = self._conn
        return conn if conn is not None and conn.live else None

    # -- consumers and settling

    def _update_consumers(self, wait: bool) -> None:
        """Have serve's loop apply the registrations now; while nothing serves, serve applies them when it starts."""
        if threading.current_thread() is self._io_thread:
            conn = self._live_connection()
            if conn is not None:
                self._sync_consumers(conn)
            return
        future = self._queue_call(self._sync_consumers, connect=False)
        if future is not None and wait:
            self._result_of(future)

    def _sync_consumers(self, conn: Connection) -> None:
        """Bring ``conn``'s subscriptions in line: new consumers subscribe, cancelled ones stop, prefetch changes."""
        with self._cv:
            consumers = self._consumers
            self._consumers = [c for c in consumers if c.active]
        for consumer in consumers:
            if not consumer.active:
                conn.consumers.unsubscribe(consumer)
            elif consumer.connection is not conn:
                conn.consumers.subscribe(consumer)
            elif consumer.applied_prefetch != consumer.prefetch:
                conn.consumers.reconsume(consumer)

    def settle(self, delivery: RabbitDelivery) -> None:
        """Queue a delivery's ack or requeue for the I/O thread; ``RabbitDelivery`` calls this, from any thread."""
        if self._closed:
            return  # closing returned it to its queue
        with self._settle_lock:
            first = not self._settles
            self._settles.append(delivery)
        io_thread = self._io_thread  # read after the append: a loop winding down drains once more
        if first and io_thread is not None and io_thread is not threading.current_thread():
            self._wake()  # the loop itself drains after its callbacks, before it polls

    def _drain_settles(self, conn: Connection) -> None:
        if not self._settles:  # unlocked peek: a settle queued after it woke the loop, which comes back here
            return
        with self._settle_lock:
            settles, self._settles = self._settles, []
        # a delivery of an earlier connection is no longer held: the broker redelivers it
        current = [d for d in settles if d.connection is conn]
        try:
            conn.consumers.settle(current)
        except (pika.exceptions.AMQPError, OSError) as e:
            # the channel or connection is going: the broker redelivers what was not settled
            log.debug("RabbitMQ at %s: settling deliveries failed: %s", self._opts.label, describe(e))

    # -- serving

    def _start_publishing(self) -> None:
        """Serve the publishing connection on a thread of its own while this one serves."""
        out = self._out
        if out is None:
            return
        self._out_stop.clear()
        try:
            out._direct.call(lambda conn: None, connect=True)  # connected now, its serve takes the connection over
            connected = True
        except BackendError:
            connected = False  # its serve reconnects; meanwhile publishes fail as during any reconnect

        def run() -> None:
            try:
                out.serve(self._out_stop)
            except BackendError as e:  # closed meanwhile: its calls say so
                log.debug("RabbitMQ at %s: the publishing connection stopped: %s", self._opts.label, e)

        self._out_serving = threading.Thread(target=run, name="swarm-broker-publishing", daemon=True)
        self._out_serving.start()
        deadline = time.monotonic() + self._opts.reply_timeout
        while connected and out._live_connection() is None and self._out_serving.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.005)  # until its loop holds the connection: publishes from now on go there

    def _stop_publishing(self) -> None:
        """After this one: publishes still in flight are confirmed, then calls go through its blocking broker."""
        thread, self._out_serving = self._out_serving, None
        if thread is not None:
            self._out_stop.set()
            thread.join()

    def _start_serving(self) -> None:
        with self._cv:
            if self._closed:
                raise self._opts.error("the broker connection is closed")
            if self._io_thread is not None:
                raise self._opts.error("serve is already running on another thread")
            self._io_thread, self._serving, self._starting = threading.current_thread(), True, True
        # One connection a process: serve takes over the one calls made before it used (once they are done).
        # Calls made meanwhile wait for it (``_starting``) rather than find serve without a connection.
        try:
            conn = self._direct.hand_over()
            if conn is not None and self._live_connection() is None:
                with self._cv:
                    self._conn, old = conn, self._conn
                if old is not None:
                    old.shut()
            elif conn is not None:
                conn.shut()
        finally:
            with self._cv:
                self._starting = False
                self._cv.notify_all()

    def _serve_until(self, stop: threading.Event) -> None:
        """Serve, outliving connection loss: calls in flight fail, then it reconnects after a backoff.

        On each new connection it declares again the queues this broker
        declared and subscribes its consumers again; the broker redelivers
        what the lost connection held unacked.
        """
        failures = 0
        while not (stop.is_set() or self._closed):
            try:
                conn = self._live_connection() or self._connect()
                self._restore(conn)
                if failures:
                    log.info("RabbitMQ at %s: reconnected", self._opts.label)
                failures = 0
                self._loop(conn, stop)
            except (BackendError, pika.exceptions.AMQPError, OSError) as e:
                failures += 1
                wait = reconnect_delay(failures)
                log.warning("%s; reconnecting in %.1f s", self._opts.explain(e), wait)
                self._drop()
                self._pause(stop, wait)

    def _connect(self) -> Connection:
        conn = Connection.open(self._opts)
        with self._cv:
            self._conn = conn
            self._cv.notify_all()  # calls waiting for a connection (see _queue_call)
        return conn

    def _restore(self, conn: Connection) -> None:
        """Declare again what this broker declared, and bring its consumers up to date, on ``conn``."""
        with self._cv:
            declared = list(self._declared)
        conn.declare(declared, self.bounds)
        self._sync_consumers(conn)

    def _loop(self, conn: Connection, stop: threading.Event) -> None:
        with conn.waking_every(TICK):
            while True:
                self._run_queued(conn)
                conn.consumers.dispatch(self)
                self._drain_settles(conn)  # after the callbacks, which may have settled some
                conn.consumers.resubscribe_broken()
                if stop.is_set() or self._closed:
                    return
                conn.pump()

    def _run_queued(self, conn: Connection) -> None:
        while self._queued:
            self._queued.popleft().run(conn)

    def _drop(self) -> None:
        """Forget the connection: queued calls fail, consumers subscribe again on the next one."""
        with self._cv:
            conn, self._conn = self._conn, None
            calls = list(self._queued)
            self._queued.clear()
        error = self._opts.error("connection lost; try again")
        for call in calls:
            call.fail(error)
        with self._settle_lock:
            self._settles.clear()  # all of the lost connection: nothing to settle
        if conn is not None:
            conn.shut()

    def _pause(self, stop: threading.Event, seconds: float) -> None:
        """Sleep between reconnects, cut short by ``stop`` or ``close``."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or self._closed) and time.monotonic() < deadline:
            stop.wait(min(TICK, deadline - time.monotonic()))

    def _finish_serving(self) -> None:
        """Run what was queued for the loop and wait for confirms other threads wait on; then let go."""
        with self._cv:
            self._serving = False  # calls from now on go through the blocking broker
            self._cv.notify_all()
        try:
            conn = self._live_connection()
            if conn is None:
                self._drop()
            else:
                self._run_queued(conn)
                self._drain_settles(conn)
                conn.pump_until(conn.publisher.confirmed)  # their publishers wait on threads that do not pump
                conn.flush()
        except (BackendError, pika.exceptions.AMQPError, OSError) as e:
            log.warning("%s", self._opts.explain(e))
        finally:
            if self._closed:
                self._shut()
            with self._cv:
                self._io_thread = None
                self._cv.notify_all()

    def _shut(self) -> None:
        """Close both connections; acks made since serve returned are written first."""
        with self._cv:
            conn, self._conn = self._conn, None
        if conn is not None:
            if conn.live:
                self._drain_settles(conn)
            conn.shut()
        self._direct.close()
