"""The master: one thread that plans, checkpoints, publishes and watches a run.

Every step is idempotent and reads its starting point from the ledger, so
a master killed anywhere and started again resumes the same run:

    lock -> open run -> for each phase: plan+checkpoint -> watch (publish a
    window ahead of the consumers, reap expired leases, re-publish lost
    messages) -> barrier -> finish

The phase is published (``PhaseState.PUBLISHED``) once nothing of it is
left planned; a full bounded queue is waited for (``master.window``).
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import time
from typing import Any, Callable, Collection, Mapping, Sequence, TypeVar

from master.planner import plan_phase
from master.splitting import Splitter
from master.window import PublishWindow
from swarm import metrics
from swarm.alerts import Alert, no_alert
from swarm.broker import Broker, declare_stages, stage_queue
from swarm.checks import summary as checks_summary
from swarm.context import source_of
from swarm.errors import BackendError, BackendRefused, MasterLockLost, SwarmError, TableError
from swarm.failpoints import failpoint
from swarm.fleetcontrol import draining
from swarm.ledger import MasterLedger, Message, MessageState, PhaseState, Run, RunStatus, known_run
from swarm.publishing import finish_interrupted, publish, run_checks, seed_from_published
from swarm.signing import SiteKeys, process_keys
from swarm.slices import SplitSettings
from swarm.stage import Job
from swarm.table import TableStore

log = logging.getLogger("swarm.master")

T = TypeVar("T")
TOP_UP_EVERY = 0.1  # seconds between looks at the queues while a phase is still being published
ProgressFn = Callable[[str, str, Mapping[MessageState, int]], None]  # run, phase, counts by state


class RunFailed(SwarmError):
    """The run cannot finish; the message is the reason recorded on it."""


class RunCancelled(SwarmError):
    """An operator cancelled the run while this master held it (``swarm runs cancel --force``)."""


@dataclasses.dataclass
class MasterSettings:
    poll: float = 1.0  # seconds between looks at the ledger
    publish_batch: int = 5000  # messages per confirmed publish and checkpoint update
    window: int = 10_000  # ready messages kept ahead on each stage queue (master/window.py); 0: the whole phase
    split: SplitSettings = dataclasses.field(default_factory=SplitSettings)  # [split]: master.splitting
    lost_after: float = 120.0  # a queued message untouched this long, on an empty queue, is re-published
    patience: float = 900.0  # how long a broker or ledger outage is waited out before the master gives up
    deadline: float | str | None = None  # epoch seconds, or "HH:MM" next after the run began; alert once if missed
    options: dict = dataclasses.field(default_factory=dict)  # passed to planners and handlers
    fresh_broker: bool = False  # an in-process broker, new with this process: a resumed phase's queued work is lost


class Master:
    def __init__(
        self,
        job: Job,
        params: Mapping[str, str],
        broker: Broker,
        ledger: MasterLedger,
        tables: TableStore,
        settings: MasterSettings | None = None,
        progress: ProgressFn | None = None,
        run_id: str | None = None,
        phases: Sequence[str] | None = None,
        chunks: Collection[str] | None = None,
        lock_key: str | None = None,
        alert: Alert = no_alert,
        keys: SiteKeys | None = None,
        on_locked: Callable[[], object] | None = None,
        spec: Mapping[str, Any] | None = None,
        roots: Callable[[], list[Message]] | None = None,
    ):
        """``phases``/``chunks`` narrow a rerun; ``lock_key`` is the run whose one-master lock is taken.

        ``spec``: a rerun's plan, recorded on its run; its ``reads`` name the
        generations the phases it skips come from. ``roots``: the first
        phase's root messages when a rerun starts inside a phase (instead of
        its planner's chunks).

        ``on_locked`` runs once the lock is held: whatever would clash with a
        running master (its metrics port, say) starts only then, so a second
        master refuses cleanly instead.
        """
        job.verify()
        self.job, self.params = job, dict(params)
        self.broker, self.ledger, self.tables = broker, ledger, tables
        self.settings = settings or MasterSettings()
        self.progress = progress or (lambda run, phase, counts: None)
        self.run_id = run_id or job.run_id(self.params)
        self.phases = list(phases) if phases else job.phases
        self.chunks = set(chunks) if chunks else None
        self.lock_key = lock_key or self.run_id
        self.alert = alert
        self.keys = keys or process_keys()  # signs the plan; the workers must hold the same site key
        self.splitter = Splitter(job, broker, ledger, tables, self.keys, self.settings.split)
        self.on_locked = on_locked
        self.spec = dict(spec or {})
        self.reads: Mapping[str, str] = self.spec.get("reads", {})
        self.roots = roots
        self._deadline_alerted = False
        self.holder = f"master {socket.gethostname()}:{os.getpid()}"
        self.window: PublishWindow | None = None  # the current phase's
        self.draining = False  # an operator drains the job: the window publishes nothing (``swarm ctl drain``)

    def run(self) -> Run:
        """Run or resume to the end; returns the run as the ledger has it (done or failed)."""
        self._patiently("start", self.ledger.lock_master, self.lock_key, self.holder)
        try:
            if self.on_locked is not None:
                self.on_locked()
            while True:
                try:
                    return self._run_locked()
                except MasterLockLost as exc:
                    # Another master may have run the night meanwhile: start over from the ledger, as a new
                    # master would, once the lock is this master's again (MasterLocked if another holds it).
                    log.warning("%s; resuming %s from the ledger once this master holds the lock again", exc,
                                self.run_id)
                    self._patiently("start", self.ledger.lock_master, self.lock_key, self.holder)
        finally:
            self.ledger.unlock_master(self.lock_key)

    def _run_locked(self) -> Run:
        self._patiently("start", self._check_tables)
        if self.job.publishes:
            self._patiently("start", finish_interrupted, self.job, source_of(self.lock_key), self.ledger, self.tables)
        run = self._patiently("start", self.ledger.open_run, self.run_id, self.job.name, self.params, self.spec)
        if run.status == RunStatus.DONE:
            log.info("run %s is already done", self.run_id)
            return run
        if run.status in (RunStatus.HELD, RunStatus.REJECTED):
            log.info("run %s is %s: `swarm status %s` shows its checks", self.run_id, run.status, self.run_id)
            return run
        if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
            # Not the error itself: a handler's error may quote the data, which INFO lines never carry.
            log.info("run %s %s before; resuming it (the error: swarm status %s)", self.run_id, run.status,
                     self.run_id)
            self.ledger.update_run(self.run_id, status=RunStatus.RUNNING)
        self._patiently("start", self._declare)
        try:
            for phase in self.phases:
                self._patiently(phase, self._phase, phase)
        except RunCancelled as exc:
            log.error("run %s was cancelled while this master ran it: %s", self.run_id, exc)
        except RunFailed as exc:
            log.error("run %s failed: %s", self.run_id, exc)
            self.ledger.update_run(self.run_id, status=RunStatus.FAILED, error=str(exc), finished=True)
            self._alert("run_failed", error=str(exc))
        else:
            failpoint("master.finish")
            self._patiently("finish", self._finish)
        return known_run(self.ledger, self.run_id)

    def _finish(self) -> None:
        """Done; for a job that publishes, only once its checks pass and its result is promoted, else held."""
        if not self.job.publishes:
            self.ledger.update_run(self.run_id, status=RunStatus.DONE, finished=True)
            log.info("run %s done", self.run_id)
            return
        results = run_checks(self.job, self.run_id, self.params, self.ledger, self.tables)
        if all(r.passed for r in results):
            failpoint("master.checked")
            publish(self.job, self.run_id, self.ledger, self.tables)
            log.info("run %s done: %d check(s) passed, result published", self.run_id, len(results))
            return
        why = checks_summary(results)
        self.ledger.update_run(self.run_id, status=RunStatus.HELD, error=why, finished=True)
        log.error("run %s is held, its result unpublished: %s", self.run_id, why)
        self._alert("run_held", checks=[dataclasses.asdict(r) for r in results if not r.passed])

    def _check_tables(self) -> None:
        """Refuse to start while a table the job declares is missing: its messages could only fail."""
        missing = sorted(set(self.job.tables) - set(self.tables.tables()))
        if missing:
            raise TableError(f"job {self.job.name}: table(s) {', '.join(missing)} do not exist; "
                             f"create them with `swarm tables create {self.job.name}`")

    def _declare(self) -> None:
        declare_stages(self.broker, self.job)  # each with its bound

    def _patiently(self, what: str, step: Callable[..., T], *args) -> T:
        """Run ``step``, waiting out broker and ledger outages up to ``settings.patience`` seconds.

        Each step starts from what the ledger holds, so running it again
        after a failure part-way through is safe.
        """
        started, failures = time.monotonic(), 0
        while True:
            try:
                return step(*args)
            except (BackendRefused, MasterLockLost):
                raise  # a refusal (a password, a grant, a certificate): waiting will not fix it; a lapsed lock: run()
            except BackendError as exc:
                failures += 1
                if time.monotonic() - started > self.settings.patience:
                    raise
                log.warning("backend unavailable during %s of %s (try %d): %s", what, self.run_id, failures, exc)
                time.sleep(min(30.0, self.settings.poll * 2 ** min(failures, 5)))

    # one phase ----------------------------------------------------------------

    def _phase(self, phase: str) -> None:
        state = self.ledger.phase_state(self.run_id, phase)
        if state == PhaseState.DONE:
            return
        self.ledger.update_run(self.run_id, phase=phase)
        if state is None:
            self._hold(phase)
            if self.roots is not None and phase == self.phases[0]:
                messages = self.roots()
            else:
                messages = plan_phase(self.job, self.run_id, phase, self.tables, self.settings.options, self.keys,
                                      self.reads)
            if self.chunks is not None and phase == self.phases[0]:
                messages = [m for m in messages if m.chunk in self.chunks]
            if self.spec.get("chunks") and self.job.publishes:
                # Some chunks only: the rest of the result is the one published now, carried over
                # before the plan is checkpointed (so before any worker writes), again if cut off here.
                seed_from_published(self.job, source_of(self.lock_key), self.run_id, self.ledger, self.tables)
            self.ledger.save_plan(self.run_id, phase, messages)  # the checkpoint, before any publish
            log.info("planned %s phase %s: %d chunks", self.run_id, phase, len(messages))
            failpoint("master.after_plan")
            state = PhaseState.PLANNED
        self.window = PublishWindow(self.job, self.run_id, phase, self.broker, self.ledger, self.settings.window,
                                    self.settings.publish_batch, planned=state == PhaseState.PLANNED,
                                    hold=lambda: self._watch_drain(phase))
        if self.settings.fresh_broker:
            self._republish_queued(phase)
        self._watch(phase)
        failpoint("master.barrier")
        self.ledger.set_phase_state(self.run_id, phase, PhaseState.DONE)

    def _top_up(self, phase: str) -> None:
        """Publish what the window has room for; the phase is published once nothing of it is left planned."""
        window = self.window
        if window is None or not window.open:
            return
        was_planned = window.planned
        window.top_up()
        if was_planned and not window.planned:
            failpoint("master.after_publish")
            self.ledger.set_phase_state(self.run_id, phase, PhaseState.PUBLISHED)

    def _publish_again(self, messages: list[Message]) -> None:
        """Queued messages to publish again: through the window, which waits for room on a bounded queue."""
        if self.window is not None:
            self.window.again(messages)
            self._top_up(self.window.phase)
        else:
            self._publish(messages)

    def _hold(self, phase: str) -> None:
        """While an operator drains the job (``swarm ctl drain``), plan and publish nothing new; watch the run.

        What is planned and not published stays planned in the checkpoint:
        once the drain is lifted, this master (or the next) publishes it.
        """
        self._watch_drain(phase)
        while self.draining:
            self._tend(phase, self._look(phase))
            time.sleep(self.settings.poll)
            self._watch_drain(phase)

    def _watch_drain(self, phase: str) -> bool:
        """Whether an operator drains the job now: while so, the window publishes nothing new of the plan."""
        held = draining(self.ledger, self.job.name)
        if (held is not None) != self.draining:
            if held is not None:
                log.warning("job %s is draining (by %s%s): %s phase %s publishes no new work until "
                            "`swarm ctl resume %s`", self.job.name, held.issued_by or "an operator",
                            f": {held.reason}" if held.reason else "", self.run_id, phase, self.job.name)
            else:
                log.info("job %s: the drain is lifted; %s phase %s goes on", self.job.name, self.run_id, phase)
        self.draining = held is not None
        return self.draining

    def _republish_queued(self, phase: str) -> None:
        """Resuming on a broker new with this process: what the ledger has queued is on no queue."""
        queued = self.ledger.stale_queued(self.run_id, self.ledger.now() + 1)
        if queued:
            log.info("re-publishing %d queued message(s) of %s phase %s to the new in-process broker",
                     len(queued), self.run_id, phase)
            self._publish_again(queued)

    def _publish(self, messages: list[Message]) -> None:
        self.broker.publish([(stage_queue(self.job.name, m.stage), m.body) for m in messages])

    def _watch(self, phase: str) -> None:
        """Wait for the barrier: every message of the phase settled, as the ledger counts them.

        Each look reads the counts (and whether an operator cancelled the
        run); while work is open, the master then tends the run: fresh queue
        depths, lost work re-published, its lock renewed, the deadline checked.
        """
        while True:
            self._top_up(phase)
            counts = self._look(phase)
            if barrier_passed(counts):
                self._check_failed(phase, counts)
                return
            self._tend(phase, counts)
            self._pause(phase)

    def _pause(self, phase: str) -> None:
        """``poll`` seconds; while the window has work to publish, topping it up every ``TOP_UP_EVERY``."""
        until = time.monotonic() + self.settings.poll
        while self.window is not None and self.window.open and time.monotonic() < until:
            time.sleep(min(TOP_UP_EVERY, max(0.0, until - time.monotonic())))
            self._top_up(phase)
        time.sleep(max(0.0, until - time.monotonic()))

    def _look(self, phase: str) -> Mapping[MessageState, int]:
        """The phase's messages by state, reported; ``RunCancelled`` once an operator ended the run."""
        run = self.ledger.get_run(self.run_id)
        if run is not None and run.status == RunStatus.CANCELLED:
            raise RunCancelled(run.error or "cancelled")
        counts = self.ledger.counts(self.run_id, phase)
        self.progress(self.run_id, phase, counts)
        for state, n in counts.items():
            metrics.CHUNKS.labels(self.run_id, phase, state).set(n)
        return counts

    def _tend(self, phase: str, counts: Mapping[MessageState, int]) -> None:
        for stage in self.job.stages.values():
            if stage.phase == phase:
                self._depth(stage.name)  # swarm_queue_depth, fresh on every look
        self._recover_lost()
        self.ledger.lock_master(self.lock_key, self.holder)  # renew
        self._check_deadline(phase, counts)
        self.splitter.tend(self.run_id, phase, counts)  # the last long ranges, waiting unclaimed, among idle threads

    def _depth(self, stage: str) -> int:
        queue = stage_queue(self.job.name, stage)
        depth = self.broker.depth(queue)
        metrics.QUEUE_DEPTH.labels(queue).set(depth)
        return depth

    def _check_deadline(self, phase: str, counts: Mapping[MessageState, int]) -> None:
        deadline = self.settings.deadline
        if isinstance(deadline, str):
            run = known_run(self.ledger, self.run_id)
            deadline = self.settings.deadline = next_time_of_day(run.created_at, deadline)
        if deadline is None or self._deadline_alerted or time.time() < deadline:
            return
        self._deadline_alerted = True
        log.error("run %s missed its deadline; still in phase %s", self.run_id, phase)
        self._alert("deadline_missed", phase=phase, counts=dict(counts), deadline=deadline)

    def _alert(self, event: str, **detail) -> None:
        self.alert({"event": event, "run": self.run_id, "job": self.job.name, "params": self.params,
                    "at": time.time(), **detail})

    def _check_failed(self, phase: str, counts: Mapping[MessageState, int]) -> None:
        bad = counts.get(MessageState.DEAD, 0) + counts.get(MessageState.ABORTED, 0)
        if not bad:
            return
        failed = (MessageState.DEAD, MessageState.ABORTED)
        first = next((f for f in self.ledger.failures(self.run_id) if f.state in failed), None)
        detail = f"; first: {first.id}: {first.error.splitlines()[0] if first.error else ''}" if first else ""
        raise RunFailed(
            f"phase {phase}: {counts.get(MessageState.ABORTED, 0)} aborted and "
            f"{counts.get(MessageState.DEAD, 0)} dead-lettered message(s){detail}"
        )

    def _recover_lost(self) -> None:
        """Re-publish work whose lease expired, and queued work that vanished from the broker."""
        expired = self.ledger.reclaim_expired(self.run_id, self.ledger.now())
        if expired:
            log.warning("re-publishing %d message(s) whose lease expired", len(expired))
            self._publish_again(expired)
        stale = self.ledger.stale_queued(self.run_id, self.ledger.now() - self.settings.lost_after)
        depths = {stage: self._depth(stage) for stage in {m.stage for m in stale}}
        lost = [m for m in stale if depths[m.stage] == 0]
        if lost:
            log.warning("re-publishing %d queued message(s) missing from their empty queues", len(lost))
            self._publish_again(lost)


def barrier_passed(counts: Mapping[MessageState, int]) -> bool:
    """Whether no message of the phase is open: each is done, dead or aborted."""
    return not any(n for state, n in counts.items() if not state.terminal)


def next_time_of_day(after: float, hhmm: str) -> float:
    """The first local ``HH:MM`` after ``after`` (epoch seconds)."""
    hour, _, minute = hhmm.partition(":")
    start = datetime.datetime.fromtimestamp(after)
    at = start.replace(hour=int(hour), minute=int(minute or 0), second=0, microsecond=0)
    if at <= start:
        at += datetime.timedelta(days=1)
    return at.timestamp()
