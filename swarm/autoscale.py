"""Grow and shrink a host's worker processes under supervisord with the depth of a job's queues.

``decide`` is the whole policy, a pure function. Scaling up is immediate:
``up_depth`` waiting messages per running worker. Scaling down waits until
fewer workers would have done for ``down_idle_seconds`` without a break,
then drains one worker (supervisord's ``stopProcess`` sends TERM: the worker
finishes the messages in hand and exits), and waits as long again before
the next one. The asymmetry is the hysteresis: a queue that wobbles around
a threshold adds a worker at once but removes one only after a calm spell.

Workers it did not start (``supervisorctl restart swarm-worker:*`` starts
every process of the program) are drained at its next look, down to what
it wanted or what the queue needs, whichever is more.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import urllib.parse
import xmlrpc.client
from typing import Callable, Mapping, Sequence

from supervisor.xmlrpc import SupervisorTransport

from swarm.broker import Broker
from swarm.errors import BackendError, ConfigError
from swarm.urls import redact

log = logging.getLogger("swarm.autoscale")

UP_STATES = ("STARTING", "RUNNING", "BACKOFF")  # counted as running; STOPPING ones are on their way out
IDLE_STATES = ("STOPPED", "EXITED", "FATAL")  # can be started


@dataclasses.dataclass(frozen=True)
class Policy:
    min: int
    max: int
    up_depth: int
    down_idle_seconds: float

    @classmethod
    def from_config(cls, section: Mapping) -> "Policy":
        """The ``[autoscale]`` settings; ``ConfigError`` naming the key that is wrong."""
        policy = cls(section["min"], section["max"], section["up_depth"], section["down_idle_seconds"])
        if policy.min < 0:
            raise ConfigError(f"autoscale.min must be 0 or more, got {policy.min}")
        if policy.max < max(policy.min, 1):
            raise ConfigError(f"autoscale.max must be at least 1 and at least autoscale.min ({policy.min}), "
                              f"got {policy.max}")
        if policy.up_depth < 1:
            raise ConfigError(f"autoscale.up_depth must be at least 1, got {policy.up_depth}")
        return policy


@dataclasses.dataclass(frozen=True)
class Decision:
    target: int  # workers that should be running
    low_since: float | None  # since when fewer workers would have done; carry it to the next call
    reason: str  # why ``target``, worded to follow "N running, target M: "
    running: int = 0  # workers running when it was decided

    def describe(self) -> str:
        """``0 running, target 1: below autoscale.min = 1``: the count now, the count wanted and why."""
        return f"{self.running} running, target {self.target}: {self.reason}"


def decide(depth: int | None, running: int, low_since: float | None, now: float, policy: Policy,
           wanted: int | None = None) -> Decision:
    """How many workers should run, given ``depth`` waiting messages (None: unknown) and ``running`` now.

    ``wanted``: the target of the previous look (None: no look yet); workers
    beyond it were started by someone else.
    """
    needed = None if depth is None else min(max(math.ceil(depth / policy.up_depth), policy.min), policy.max)
    waiting = f"{depth} waiting, more than {policy.up_depth} per worker"
    if running < policy.min:
        if needed is not None and needed > policy.min:  # a backlog already: straight to what it needs
            return Decision(needed, None, f"below autoscale.min = {policy.min}; {waiting}", running)
        return Decision(policy.min, None, f"below autoscale.min = {policy.min}", running)
    if running > policy.max:
        return Decision(policy.max, None, f"above autoscale.max = {policy.max}", running)
    if needed is None:
        return Decision(running, None, "queue depth unknown: holding", running)
    if needed > running:
        return Decision(needed, None, waiting, running)
    if needed == running:
        return Decision(running, None, "steady", running)
    if wanted is not None and running > wanted:
        # No calm spell for these: the queue never asked for them.
        keep = max(wanted, needed)
        return Decision(keep, None, f"{running - wanted} started outside the autoscaler; {needed} would do", running)
    if low_since is None:
        return Decision(running, now, f"{needed} would do; waiting {policy.down_idle_seconds:.0f} s to be sure",
                        running)
    if now - low_since < policy.down_idle_seconds:
        return Decision(running, low_since, f"{needed} would do for {now - low_since:.0f} s", running)
    # The calm spell for the next one starts now.
    return Decision(running - 1, now if needed < running - 1 else None,
                    f"{needed} would have done for {now - low_since:.0f} s", running)


class Supervisor:
    """A program's processes, through supervisord's XML-RPC interface."""

    def __init__(self, url: str, group: str):
        self.url, self.group = url, group
        transport = SupervisorTransport(*_credentials(url))
        # The host part is ignored by the transport: it talks to ``url`` (a UNIX socket or a port).
        self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def processes(self) -> list[dict]:
        """The program's processes, as ``getAllProcessInfo`` reports them, by name."""
        return sorted((p for p in self.all_processes() if p["group"] == self.group), key=lambda p: p["name"])

    def all_processes(self) -> list[dict]:
        """Every process this supervisord runs, of every program."""
        return list(self._call("getAllProcessInfo"))

    def start(self, names: Sequence[str]) -> None:
        for name in names:
            self._call("startProcess", f"{self.group}:{name}", False, tolerate=_ALREADY_STARTED)

    def stop(self, names: Sequence[str]) -> None:
        """Send each the stop signal (TERM: it drains); supervisord waits for it, we do not."""
        for name in names:
            self._call("stopProcess", f"{self.group}:{name}", False, tolerate=_NOT_RUNNING)

    def _call(self, method: str, *args: object, tolerate: int | None = None):
        """``supervisor.<method>(*args)``; a fault with code ``tolerate`` is no error."""
        try:
            return getattr(self._rpc.supervisor, method)(*args)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == tolerate:  # someone else got there first
                return None
            raise BackendError(f"supervisord at {redact(self.url)}: {exc.faultString}") from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            raise BackendError(f"supervisord at {redact(self.url)}: {exc}") from None


_ALREADY_STARTED, _NOT_RUNNING = 60, 70  # supervisor.xmlrpc.Faults


def _credentials(url: str) -> tuple[str | None, str | None, str]:
    """(username, password, server URL without them) for supervisor's transport.

    ``unix://user:password@/path/to.sock`` or ``http://user:password@host:port``.
    """
    parts = urllib.parse.urlsplit(url)
    user, password = (urllib.parse.unquote(p) if p else p for p in (parts.username, parts.password))
    if parts.scheme == "unix":
        return user, password, f"unix://{parts.path}"
    if parts.scheme != "http":
        return None, None, url
    return user, password, f"http://{parts.hostname}:{parts.port or 80}"


def plan(processes: Sequence[dict], target: int) -> tuple[list[str], list[str]]:
    """(names to start, names to stop) to bring the running count to ``target``."""
    up = [p for p in processes if p["statename"] in UP_STATES]
    if target >= len(up):
        idle = [p["name"] for p in processes if p["statename"] in IDLE_STATES]
        return idle[:target - len(up)], []
    # Those not doing work yet go first, then the highest numbers, so the low ones stay put.
    waiting = sorted((p["name"] for p in up if p["statename"] != "RUNNING"), reverse=True)
    working = sorted((p["name"] for p in up if p["statename"] == "RUNNING"), reverse=True)
    return [], (waiting + working)[:len(up) - target]


class Autoscaler:
    """Looks at the queues every ``interval`` seconds and starts or drains workers."""

    def __init__(self, broker: Broker, queues: Sequence[str], supervisor: Supervisor, policy: Policy,
                 interval: float, dry_run: bool = False, clock: Callable[[], float] = time.monotonic,
                 bounds: Mapping[str, int] | None = None):
        """``bounds``: the bounded queues among ``queues`` (``max_queue``), declared so."""
        self.broker, self.queues, self.supervisor, self.policy = broker, list(queues), supervisor, policy
        self.bounds = dict(bounds or {})
        self.interval, self.dry_run, self.clock = interval, dry_run, clock
        self._low_since: float | None = None
        self._wanted: int | None = None
        self._declared = False

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.tick()
            except BackendError as exc:
                log.warning("%s; trying again in %.0f s", exc, self.interval)
            stop.wait(self.interval)

    def tick(self) -> Decision:
        """One look and what it led to."""
        processes = self.supervisor.processes()
        running = sum(p["statename"] in UP_STATES for p in processes)
        depth = self._depth()
        decision = decide(depth, running, self._low_since, self.clock(), self.policy, self._wanted)
        self._low_since = decision.low_since
        if depth is not None or self._wanted is None:  # holding blind is no choice of the workers it wants
            self._wanted = decision.target
        if decision.target != running:
            self._apply(processes, running, decision)
        return decision

    def _depth(self) -> int | None:
        try:
            if not self._declared:
                self.broker.declare(self.queues, self.bounds)  # the first worker may not have declared them yet
                self._declared = True
            # Retries waiting out their backoff are not work for a worker yet:
            # counted, a long backoff would hold the fleet at its size.
            return sum(self.broker.depth(q, delayed=False) for q in self.queues)
        except BackendError as exc:
            log.warning("cannot read the queue depths: %s", exc)
            return None

    def _apply(self, processes: Sequence[dict], running: int, decision: Decision) -> None:
        start, stop = plan(processes, decision.target)
        if not processes:
            log.warning("supervisord has no program %s: check autoscale.group", self.supervisor.group)
        elif decision.target > running and len(start) < decision.target - running:
            log.warning("%s has %d processes in all; autoscale.max is %d: render the supervisord config with "
                        "--processes %d", self.supervisor.group, len(processes), self.policy.max, self.policy.max)
        verb = "would " if self.dry_run else ""
        if start:
            log.info("%sstart %s: %d -> %d workers (%s)", verb, ", ".join(start), running, decision.target,
                     decision.reason)
        if stop:
            log.info("%sdrain %s: %d -> %d workers (%s)", verb, ", ".join(stop), running, decision.target,
                     decision.reason)
        if not self.dry_run:
            self.supervisor.start(start)
            self.supervisor.stop(stop)
