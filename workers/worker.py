"""The worker process: serves a job's stages, each a SEDA stage with its own bounded thread pool.

The broker's I/O loop runs on the main thread and only puts deliveries on
the stages' queues; prefetch is ``pool x batch``, so at most that many
messages of a stage are in this process at once and the backlog waits in
the broker. Each stage's controller moves how many of its threads may work
at once between ``pool_min`` and ``pool``, from its queue and its latency,
and the stage's prefetch follows: one batch more than its working threads
take, so a backlog still shows in the stage's queue. A stage that had to
hand messages back because a bounded successor stayed full works on
``pool_min`` threads until that cools down (``swarm.backpressure``).

What operators put in force on the fleet (``swarm ctl``: a stage paused, a
config reload) is read once a second by the worker's control thread
(``swarm.fleetcontrol.ControlWatch``): a paused stage's pool takes no new
batches, its consumer is cancelled and what it had prefetched but not
started goes back to the queue; resumed, it consumes again.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Iterable

from swarm import metrics
from swarm.broker import Broker, Delivery, declare_stages, stage_queue
from swarm.config import Config
from swarm.control import ConcurrencyController
from swarm.errors import BackendError, BackendRefused, ConfigError
from swarm.fleetcontrol import ControlWatch
from swarm.flow import JUDGE_AFTER_DONE, JUDGE_WITHIN_SECONDS, longest_hold, prefetch_at
from swarm.ledger import Control, WorkerLedger
from swarm.pool import HandBack, StagePool
from swarm.reloading import LiveConfig, log_appliers
from swarm.runtime import Processor
from swarm.stage import Job, Stage
from swarm.table import TableStore

log = logging.getLogger("swarm.worker")

START_RETRY_FIRST, START_RETRY_CAP = 1.0, 30.0  # seconds between tries to reach the broker at start
def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident() % 100000}"


class Worker:
    """Consumes the queues of some (default: all) stages of one job."""

    def __init__(
        self,
        job: Job,
        broker: Broker,
        ledger: WorkerLedger,
        tables: TableStore,
        stages: Iterable[str] | None = None,
        holder: str | None = None,
        lease: float = 60.0,
        options: dict | None = None,
        config: Config | None = None,
        **processor_args,
    ):
        """``config``: the settings it was started with, which ``swarm ctl reload`` has it read again."""
        self.job, self.broker = job, broker
        names = list(stages) if stages else list(job.stages)
        unknown = [n for n in names if n not in job.stages]
        if unknown:
            raise ConfigError(f"worker.stages: job {job.name} has no stage(s) {unknown}; it has {list(job.stages)}")
        self.stages = [job.stages[n] for n in names]
        self.lease = lease
        self.processor = Processor(
            job, broker, ledger, tables, holder or default_holder(), lease, options=options, **processor_args
        )
        self.pools: dict[str, StagePool] = {}
        self._held_back: set[str] = set()  # stages on pool_min threads: a successor's queue stays full
        self._housekeeping_stop = threading.Event()
        self._control_lock = threading.Lock()  # a stage is subscribed, paused or resumed under it
        self._stopping = False  # draining to exit: no stage consumes again
        self.control = ControlWatch(ledger, job.name, names, self._pause, self._resume, self._reload)
        self.live = None if config is None else LiveConfig(config, {**log_appliers(), "worker.lease": self._set_lease})

    def start(self) -> None:
        """Declare the queues, start the pools and register the consumers (paused stages' pools only)."""
        self._declare()
        self.control.look()
        self._subscribe()

    def _declare(self) -> None:
        """Declare the stages' queues and those they send to, each with its bound (publishes keep to it)."""
        names = dict.fromkeys([s.name for s in self.stages] + [n for s in self.stages for n in s.next])
        declare_stages(self.broker, self.job, names)

    def _declare_patiently(self, stop: threading.Event) -> bool:
        """Declare the queues, waiting for a broker that is down; False if ``stop`` came first.

        Exiting instead would make supervisord mark the program FATAL after
        ``startretries`` quick exits, and the fleet would stay down once the
        broker is back.
        """
        tries = 0
        while not stop.is_set():
            try:
                self._declare()
                return True
            except BackendRefused:
                raise  # a refusal (a password, a vhost, a certificate): exit, and say so, rather than wait
            except BackendError as exc:
                tries += 1
                wait = min(START_RETRY_CAP, START_RETRY_FIRST * 2 ** (tries - 1))
                log.warning("cannot reach the broker to start (try %d): %s; trying again in %.0f s", tries, exc, wait)
                stop.wait(wait)
        return False

    def _subscribe(self) -> None:
        for stage in self.stages:
            # A delivery a thread has taken waits for the handlers before it in its batch.
            queue = stage_queue(self.job.name, stage.name)
            note = self.broker.consumer_timeout_note(queue, longest_hold(stage))
            if note:
                log.error("stage %s: %s", stage.name, note)
            pool = self._pool(stage)
            pool.start()
            with self._control_lock:
                self.pools[stage.name] = pool
                if stage.name in self.control.paused:
                    pool.pause(self._hand_back_to(queue))
                    log.info("stage %s starts paused (%s)", stage.name, _by(self.control.paused[stage.name]))
                else:
                    self.broker.consume(queue, prefetch_at(stage, pool.limit), pool.put)

    def _pool(self, stage: Stage) -> StagePool:
        controller = None
        if stage.pool_min < stage.pool:
            # Start at the declared pool, as a fixed pool would: quiet windows give threads
            # back, and a backlog takes them again while each step still pays.
            controller = ConcurrencyController(stage.pool_min, stage.pool, start=stage.pool, slow_start=True)
        return StagePool(stage.name, self.processor.handle_batch, stage.pool, stage.batch, controller,
                         lambda limit: self._on_limit(stage, limit),
                         min_done=JUDGE_AFTER_DONE, max_window=JUDGE_WITHIN_SECONDS)

    def _on_limit(self, stage: Stage, limit: int) -> None:
        metrics.POOL_LIMIT.labels(self.job.name, stage.name).set(limit)
        if stage.name in self.pools:  # else not consuming yet: consume starts at this limit's prefetch
            self.broker.set_prefetch(stage_queue(self.job.name, stage.name), prefetch_at(stage, limit))

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then drain: in-flight messages finish and are acked."""
        if not self._declare_patiently(stop):
            self.broker.close()
            log.info("worker for %s stopped before it could start", self.job.name)
            return
        self.control.start(self._housekeeping_stop)  # a paused stage starts paused
        self._subscribe()
        threading.Thread(target=self._housekeeping, name="swarm-housekeeping", daemon=True).start()
        threading.Thread(target=self._renewing, name="swarm-leases", daemon=True).start()
        drained = threading.Event()
        threading.Thread(target=self._drain_after, args=(stop, drained), name="swarm-drain", daemon=True).start()
        try:
            self.broker.serve(drained)  # keeps serving acks while the pools drain
        finally:
            self._housekeeping_stop.set()
            self.broker.close()
        log.info("worker for %s stopped", self.job.name)

    def _drain_after(self, stop: threading.Event, drained: threading.Event) -> None:
        stop.wait()
        log.info("draining: no new deliveries, finishing those in hand")
        with self._control_lock:
            self._stopping = True
        try:
            self.broker.cancel()
        except BackendError as exc:
            log.warning("could not cancel consumers: %s", exc)
        for pool in self.pools.values():
            pool.shutdown(wait=True)
        drained.set()

    # fleet control: from the control thread ---------------------------------------

    def _pause(self, name: str, control: Control) -> None:
        """Take no new work of stage ``name``: in-flight work finishes, prefetched deliveries go back."""
        with self._control_lock:
            pool = self.pools.get(name)
            if pool is None or pool.paused:
                return  # not subscribed yet: it will start paused
            queue = stage_queue(self.job.name, name)
            handed = pool.pause(self._hand_back_to(queue))
            try:
                self.broker.cancel(queue)
            except BackendError as exc:  # the consumer is marked cancelled: it is dropped on reconnecting
                log.warning("stage %s: could not cancel its consumer yet: %s", name, exc)
        log.warning("stage %s paused (%s): finishing the work in hand, %d prefetched delivery(ies) handed back",
                    name, _by(control), handed)

    def _resume(self, name: str) -> None:
        with self._control_lock:
            pool = self.pools.get(name)
            if pool is None or not pool.paused or self._stopping:
                return
            pool.resume()
            stage = self.job.stages[name]
            self.broker.consume(stage_queue(self.job.name, name), prefetch_at(stage, pool.limit), pool.put)
        log.warning("stage %s resumed", name)

    def _hand_back_to(self, queue: str) -> HandBack:
        def hand_back(deliveries: list[Delivery]) -> None:
            """Deliveries of a paused stage not started: a copy on the queue, then the ack; no attempt spent.

            A requeue would count towards the broker's delivery limit on every pause.
            """
            try:
                self.broker.publish([(queue, bytes(d.body)) for d in deliveries])
            except BackendError as exc:
                log.warning("could not hand back %d delivery(ies) of %s (%s); returning them to the queue",
                            len(deliveries), queue, exc)
                for delivery in deliveries:
                    delivery.requeue()
                return
            for delivery in deliveries:
                delivery.ack()

        return hand_back

    def _reload(self) -> None:
        if self.live is None:
            log.warning("reload asked for, but this worker was started without a config to re-read")
            return
        self.live.reload()

    def _set_lease(self, seconds: float) -> None:
        self.lease = self.processor.lease = float(seconds)

    def _housekeeping(self) -> None:
        """Time out overdue handler calls and size the pools, every second (or third of a shorter lease)."""
        while not self._housekeeping_stop.wait(min(1.0, self._renew_every())):
            self.processor.expire_overdue()
            self._hold_back()
            for pool in list(self.pools.values()):
                pool.adjust()

    def _renewing(self) -> None:
        """Renew the leases of messages in hand every third of a lease.

        A thread of its own: a ledger out of reach holds a renewal up to its
        time-out, and the watchdog must not wait for it meanwhile.
        """
        started = time.monotonic()
        # Every third of a lease from the last renewal's start, not its end: on a slow link a renewal takes
        # seconds, and waiting a whole period after it would leave the lease that much shorter each time.
        while not self._housekeeping_stop.wait(max(0.0, started + self._renew_every() - time.monotonic())):
            started = time.monotonic()
            try:
                self.processor.renew_leases()
            except BackendError as exc:
                log.warning("could not renew leases: %s", exc)

    def _renew_every(self) -> float:
        return max(0.2, min(self.lease / 3, 10.0))

    def _hold_back(self) -> None:
        """Cap at ``pool_min`` threads each stage that had to hand messages back lately: a successor stayed full."""
        for stage in self.stages:
            pool = self.pools.get(stage.name)
            if pool is None or not stage.next:
                continue
            full = self.processor.backpressure.cooling(stage_queue(self.job.name, n) for n in stage.next)
            if full == (stage.name in self._held_back):
                continue
            pool.cap(stage.pool_min if full else None)
            if full:
                self._held_back.add(stage.name)
                log.info("stage %s: a queue it sends to stays full; working on %d thread(s) until it has room",
                         stage.name, stage.pool_min)
            else:
                self._held_back.discard(stage.name)
                log.info("stage %s: the queues it sends to have room again", stage.name)


def _by(control: Control) -> str:
    why = f": {control.reason}" if control.reason else ""
    return f"by {control.issued_by or 'an operator'}{why}"
