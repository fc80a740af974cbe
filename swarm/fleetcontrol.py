"""Fleet-wide control: what operators put in force (``swarm ctl``), as workers, masters and reports see it.

The controls live in the ledger (``swarm_controls``), so every process of
the fleet, on any host, sees the same ones, and a process started later
finds them:

- **paused** (a stage, or every stage of a job): workers take no new work
  of it. Handlers already running finish and are acked; deliveries a worker
  had prefetched but not started are handed back to the queue (a copy
  published, then the delivery acked, as a retry's copy is: no attempt is
  spent, in the ledger or towards the broker's delivery limit), and its
  consumer is cancelled, so the rest waits on the broker. Leases of held
  work are renewed as ever. The master goes on publishing: that work waits
  on the queue.
- **draining** (a whole job): its masters publish nothing new (no further
  publish batch of a phase, no plan of the next phase) and keep watching
  their runs; workers go on and finish everything already queued, the
  children it sends included. It is *drained* once no running run of the
  job has a message queued or claimed. A run whose last phase completes
  while draining finishes (checks, publication): that publishes no work.
- **reload**: a generation counter, per job and fleet-wide: each worker
  re-reads its config file when it rises (``swarm.reloading``).

Lifting a pause or a drain (``swarm ctl resume``) deletes its row. Each
worker process reads the controls once a second on a thread of its own
(``ControlWatch``); a ledger that cannot be read is said once, and the
last controls known stay in force until it can.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Iterable, Mapping, Sequence

from swarm.errors import clip
from swarm.ledger import EVERY_STAGE, FLEET, Control, ControlState, ControlView, HistoryLedger, MessageState, RunStatus

log = logging.getLogger("swarm.control")

POLL_SECONDS = 1.0  # one read of the controls per worker process per second
FIRST_LOOK_SECONDS = 5.0  # a starting worker waits this long for its first read before it consumes


@dataclasses.dataclass(frozen=True)
class InForce:
    """The controls in force on one job (and the fleet-wide ones), as one read of the ledger found them."""

    job: str
    controls: tuple[Control, ...] = ()

    def paused(self, stage: str) -> Control | None:
        """What pauses ``stage``: its own pause, else the job's; None if it is not paused."""
        found = {c.stage: c for c in self.controls if c.job == self.job and c.state == ControlState.PAUSED}
        return found.get(stage) or found.get(EVERY_STAGE)

    @property
    def draining(self) -> Control | None:
        return next((c for c in self.controls if c.job == self.job and c.state == ControlState.DRAINING), None)

    @property
    def generation(self) -> tuple[int, int]:
        """The reload generations, fleet-wide and of this job: a rise in either asks for a reload."""
        gens = {c.job: c.generation for c in self.controls if c.state == ControlState.RELOAD}
        return gens.get(FLEET, 0), gens.get(self.job, 0)


def in_force(ledger: ControlView, job: str) -> InForce:
    """One read of ``job``'s controls (and the fleet's)."""
    return InForce(job, tuple(ledger.controls(job)))


def draining(ledger: ControlView, job: str) -> Control | None:
    """The drain in force on ``job``, if any: what a master looks at before it publishes or plans new work."""
    return in_force(ledger, job).draining


def open_work(ledger: HistoryLedger, job: str) -> int:
    """Messages queued or claimed in ``job``'s running runs: a drain is over when there are none."""
    total = 0
    for run in ledger.runs(job, RunStatus.RUNNING, limit=1000):
        for states in ledger.chunk_counts(run.id).values():
            total += states.get(MessageState.QUEUED, 0) + states.get(MessageState.CLAIMED, 0)
    return total


def summary(ledger: HistoryLedger, job: str, stages: Sequence[str] | None = None) -> dict:
    """What is in force on ``job``, for ``swarm status``, ``swarm runs`` and ``swarm ctl status``.

    ``paused``: per stage (``*`` for the whole job), who paused it, when
    and why; ``drain``: the drain with ``drained`` (nothing of the job's
    running runs queued or claimed any more) and the ``open`` messages.
    """
    now = in_force(ledger, job)
    paused = {c.stage or "*": _described(c) for c in now.controls
              if c.job == job and c.state == ControlState.PAUSED and (stages is None or c.stage in (*stages, ""))}
    drain = None
    if now.draining is not None:
        left = open_work(ledger, job)
        drain = _described(now.draining) | {"drained": left == 0, "open": left}
    return {"job": job, "paused": paused, "drain": drain}


def _described(control: Control) -> dict:
    return {"by": control.issued_by, "at": control.updated_at, "reason": control.reason}


def describe_line(doc: Mapping) -> str:
    """``summary`` in one line; empty when nothing is in force."""
    parts = []
    if doc["paused"]:
        stages = doc["paused"]
        parts.append("paused: every stage" if "*" in stages else f"paused: {', '.join(sorted(stages))}")
    if doc["drain"] is not None:
        drain = doc["drain"]
        parts.append("drained" if drain["drained"] else f"draining ({drain['open']} message(s) still open)")
    return f"{doc['job']}: " + "; ".join(parts) if parts else ""


class ControlWatch:
    """One worker process's view of the controls: read once a second on a thread of its own, changes applied.

    ``on_pause(stage, control)`` and ``on_resume(stage)`` are called as a
    served stage's pause comes and goes, ``on_reload()`` when a reload
    generation rises; all on the watch's thread, one at a time. A read
    that fails is logged once; the last controls known stay in force.
    """

    def __init__(
        self,
        ledger: ControlView,
        job: str,
        stages: Iterable[str],
        on_pause: Callable[[str, Control], None],
        on_resume: Callable[[str], None],
        on_reload: Callable[[], None],
        interval: float = POLL_SECONDS,
    ):
        self.ledger, self.job, self.stages = ledger, job, list(stages)
        self.on_pause, self.on_resume, self.on_reload = on_pause, on_resume, on_reload
        self.interval = interval
        self.current = InForce(job)
        self.paused: dict[str, Control] = {}  # the served stages paused now
        self._generation: tuple[int, int] | None = None  # unknown until the first read
        self._failing = False
        self._looked = threading.Event()  # the first read has answered, one way or the other
        self._lock = threading.Lock()

    def look(self) -> bool:
        """Read the controls and apply what changed; False when the ledger could not be read."""
        with self._lock:
            try:
                now = in_force(self.ledger, self.job)
            except Exception as exc:  # noqa: BLE001 - an outage, or a bug: the worker serves on either way
                self._failed(exc)
                return False
            finally:
                self._looked.set()
            if self._failing:
                self._failing = False
                log.warning("the fleet controls can be read again")
            self.current = now
            self._apply(now)
            return True

    def start(self, stop: threading.Event, first_wait: float = FIRST_LOOK_SECONDS) -> threading.Thread:
        """Read on a thread; wait up to ``first_wait`` s for the first read, so that a paused stage starts paused."""
        thread = threading.Thread(target=self._run, args=(stop,), name="swarm-control", daemon=True)
        thread.start()
        if not self._looked.wait(first_wait):
            log.warning("the fleet controls could not be read within %.0f s; starting with none in force, "
                        "and reading them again every %.0f s", first_wait, self.interval)
        return thread

    def _run(self, stop: threading.Event) -> None:
        self.look()
        while not stop.wait(self.interval):
            self.look()

    def _failed(self, exc: BaseException) -> None:
        if self._failing:
            return
        self._failing = True
        kept = ", ".join(f"{s} paused" for s in sorted(self.paused)) or "none"
        log.warning("cannot read the fleet controls (%s); keeping the last known in force (%s) until it can be "
                    "read", clip(str(exc), 300), kept)

    def _apply(self, now: InForce) -> None:
        for stage in self.stages:
            control = now.paused(stage)
            if control is not None and stage not in self.paused:
                self.paused[stage] = control
                self._call(f"pausing stage {stage}", self.on_pause, stage, control)
            elif control is None and stage in self.paused:
                del self.paused[stage]
                self._call(f"resuming stage {stage}", self.on_resume, stage)
        generation, self._generation = self._generation, now.generation
        if generation is not None and now.generation != generation:
            self._call("reloading the config", self.on_reload)

    @staticmethod
    def _call(what: str, action: Callable[..., None], *args: object) -> None:
        try:
            action(*args)
        except Exception:  # noqa: BLE001 - one control gone wrong must not stop the watch
            log.exception("%s failed", what)
