"""Fault injection: the nightly job on the real services while things die, scored like Jepsen.

The day is skewed (a quarter of its events in one chunk's range) and the
job's scan works through each chunk a slice of ``SLICE_ROWS`` rows at a
time, handing on the rest (``swarm.slices``), with straggler splitting on:
at the end of the map phase the rest of a long range is split among idle
threads. Every stage queue is bounded (``BOUND``): the master publishes a
window ahead of the workers, and a worker's sends wait for room.
Across its runs the suite SIGKILLs the master and workers at random instants
and at named failpoints (between planning and publishing, mid-publish, at a
barrier, while finishing, and in the result's publication: checks passed,
promotion begun, mid-rows, rows written but not yet recorded; after a worker's
table writes, after its publish, after its ledger commit), restarts the broker
once, drops every MySQL connection once, and injects handler faults. Each run
kills its master at least once inside the publication, at a point of its own
(``PUBLISH_POINTS``, by the run's index: the short plan passes each of them).
After each run the summary must equal the reference, the night must show the
run's result as published and the run be done, the ledger must show every
message done and none counted twice, and the stage queues must be empty.

Reproduce a failure with ``pytest tests/faults --fault-seed N``; ``--long``
runs more.
"""
from __future__ import annotations

import dataclasses
import random
import re
import signal
import subprocess
import time

import pytest

from master.coordinator import barrier_passed
from swarm.broker import stage_queue
from swarm.ledger import MessageState, PhaseState
from swarm.slices import is_part
from tests.support.mysql import kill_mysql_sessions
from tests.support.rabbitmq import rabbitmqctl
from tests.support.scoring import score_night, waiting
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

EVENTS = 6_000
HOT = 0.25  # of the events in one chunk's range: ~1,700 rows there, ~190 in each of the 23 others
SLICE_ROWS = 100  # rows a scan message takes before it hands on the rest
SPLIT = {"enabled": True, "ways": 3, "tail": 8, "min_rows": 60}  # a rest of 60 rows or more, once 8 are open
BOUND = 20  # every stage queue's bound (jobs.max_queue): the master's window and the workers' sends keep to it
# The master's finish path, in order: checks passed; the ledger records the promotion begun; after a batch
# of table writes; every row written, before the ledger records the night published and the run done.
PUBLISH_POINTS = ["master.checked", "publish.begun", "publish.mid_rows", "publish.before_record"]
MASTER_POINTS = ["master.after_plan", "master.mid_publish", "master.after_publish", "master.barrier",
                 "master.finish", *PUBLISH_POINTS]
WORKER_POINTS = ["worker.after_apply", "worker.after_publish", "worker.after_complete"]


@dataclasses.dataclass
class Score:
    runs: int = 0
    master_kills: int = 0
    worker_kills: int = 0
    broker_restarts: int = 0
    mysql_disconnects: int = 0
    handler_faults: int = 0
    lost: int = 0  # as tests.support.scoring.Tally: reference rows missing from the summary
    unexpected: int = 0
    wrong: int = 0
    duplicated: int = 0
    leftover: int = 0
    publish_kills: int = 0  # masters killed at a failpoint of the publication
    slices: int = 0  # scan messages that continued a slice before them
    splits: int = 0  # scan messages that are a part of a split range (or a slice of one)
    seed: int | None = None
    points: dict[str, int] = dataclasses.field(default_factory=dict)  # master kills by failpoint

    def line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items() if k not in ("seed", "points"))


SCORE = Score()


@pytest.fixture(scope="module")
def seed(request):
    chosen = request.config.getoption("--fault-seed")
    return chosen if chosen is not None else random.SystemRandom().randrange(1_000_000)


@pytest.fixture(scope="module", autouse=True)
def remember_seed(seed):
    SCORE.seed = seed
    yield


def plan(long: bool) -> list[dict]:
    """What each run does besides killing; ``kills`` per run keeps the totals over 20 each."""
    runs = [
        {"kills": 9},
        {"kills": 9, "broker_restart": True},
        {"kills": 9, "mysql_disconnect": True},
        {"kills": 9},
    ]
    return runs * (3 if long else 1)


class Chaos:
    """Keeps a master running to completion while killing it and the workers.

    ``owed``: the publication failpoint this run must kill a master at. It is
    armed in every master until one dies there, and one kill of the quota is
    kept for it; while it is owed, no master is killed at a random instant once
    the last phase has passed its barrier, lest a kill cut off a promotion
    before the point (the resumed promotion would not pass it again).
    """

    def __init__(self, site: Site, rng: random.Random, kills: int, owed: str):
        self.site, self.rng = site, rng
        self.master_quota = self.worker_quota = kills
        self.owed, self.owed_hit = owed, False
        self.master: subprocess.Popen | None = None

    def _spare(self) -> int:
        """Master kills left for anything but the owed point."""
        return self.master_quota - (0 if self.owed_hit else 1)

    def start_master(self) -> None:
        """While kills are owed, every master dies: at a failpoint it will reach, unless killed sooner."""
        points = [self.rng.choice(self._reachable_points())] if self._spare() > 0 else []
        if not self.owed_hit and self.owed not in points:
            points.append(self.owed)
        env = {"SWARM_FAILPOINTS": ",".join(f"{p}=1" for p in points)} if points else {}
        self.master = self.site.start_master(env)

    def _reachable_points(self) -> list[str]:
        ledger = self.site.ledger()
        run = f"{JOB}@date={DATE}"
        if any(ledger.phase_state(run, phase) in (None, PhaseState.PLANNED) for phase in ("map", "reduce")):
            return MASTER_POINTS
        # A resumed master passes these every time (the publication's, while its promotion has not begun).
        return ["master.barrier", "master.finish", *PUBLISH_POINTS]

    def _finishing(self) -> bool:
        """The last phase has passed its barrier: the master is at, or soon in, its finish path."""
        ledger = self.site.ledger()
        try:
            counts = ledger.counts(f"{JOB}@date={DATE}", "reduce")
        finally:
            ledger.close()
        return bool(counts) and barrier_passed(counts)

    def start_worker(self) -> None:
        env = {}
        if self.worker_quota > 0 and self.rng.random() < 0.3:
            env["SWARM_FAILPOINTS"] = f"{self.rng.choice(WORKER_POINTS)}=0.2"
        self.site.start_worker(env)

    def step(self) -> bool:
        """One round of trouble; True when the master has finished the run."""
        code = self.master.poll()
        if code == 0:
            return True
        if code is not None:  # died: by a failpoint (-9) or a real error, both are a restart for cron
            assert code == -signal.SIGKILL, f"master failed with {code}\n{self.site.log_tail()}"
            self._master_killed(self._failpoint_hit())
            self.start_master()
        self._replace_dead_workers()
        if self._spare() > 0 and self.rng.random() < 0.6 and (self.owed_hit or not self._finishing()):
            self.master.send_signal(signal.SIGKILL)
            self.master.wait()
            self._master_killed(self._failpoint_hit())  # a failpoint may have been quicker
            self.start_master()
        if self.worker_quota > 0 and self.rng.random() < 0.8:
            victim = self.rng.choice([w for w in self.site.workers if w.poll() is None])
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        time.sleep(self.rng.uniform(0.2, 0.8))
        return False

    def _failpoint_hit(self) -> str | None:
        """The failpoint the dead master says it was killed at, if one was."""
        said = re.findall(r"failpoint (\S+): killing process", self.site.log_tail(self.master, lines=20))
        return said[-1] if said else None

    def _master_killed(self, point: str | None = None) -> None:
        self.master_quota -= 1
        SCORE.master_kills += 1
        if point is not None:
            SCORE.points[point] = SCORE.points.get(point, 0) + 1
            SCORE.publish_kills += point in PUBLISH_POINTS
            self.owed_hit = self.owed_hit or point == self.owed

    def _replace_dead_workers(self) -> None:
        for w in list(self.site.workers):
            if w.poll() is not None:
                assert w.returncode == -signal.SIGKILL, f"worker exited {w.returncode}\n{self.site.log_tail()}"
                self.site.workers.remove(w)
                self.worker_quota -= 1
                SCORE.worker_kills += 1
                self.start_worker()


def score_run(site: Site) -> None:
    tally = score_night(site, EVENTS)
    for name, value in dataclasses.asdict(tally).items():
        setattr(SCORE, name, getattr(SCORE, name) + value)
    ledger = site.ledger()
    run_id = f"{JOB}@date={DATE}"
    SCORE.handler_faults += sum(1 for f in ledger.failures(run_id, limit=10_000) if "injected fault" in (f.error or ""))
    seqs = [r.message.id.rsplit("/", 1)[1] for r in ledger.recorded(run_id, "map")]
    SCORE.slices += sum(1 for s in seqs if "+" in s.rsplit(":", 1)[-1])  # 0+1, 0+2:1+1: a slice after another
    SCORE.splits += sum(1 for s in seqs if is_part(s))
    counters = ledger.counters(run_id)
    ledger.close()
    assert not tally.leftover, f"messages left after the drain: {waiting(site)}"
    for stage in ("scan", "reduce"):  # the run went through bounded queues
        declared = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", site.vhost, "name", "arguments")
        line = next(x for x in declared.splitlines() if x.split()[0] == stage_queue(JOB, stage))
        assert f"{{\"x-max-length\",{BOUND}}}" in line.replace(" ", ""), line
    assert counters == {"rows": EVENTS, "merchants": 40}


def run_under_faults(site: Site, rng: random.Random, spec: dict, owed: str) -> None:
    chaos = Chaos(site, rng, spec["kills"], owed)
    for _ in range(3):
        chaos.start_worker()
    chaos.start_master()
    progressed = lambda: site.ledger().counts(f"{JOB}@date={DATE}").get(MessageState.DONE, 0) >= 5  # noqa: E731
    deadline = time.monotonic() + 300
    disrupted = False
    while not chaos.step():
        assert time.monotonic() < deadline, f"run did not finish\n{site.log_tail()}"
        if not disrupted and progressed():
            disrupted = True
            if spec.get("broker_restart"):
                rabbitmqctl("stop_app")
                try:
                    time.sleep(1.5)
                finally:
                    rabbitmqctl("start_app")
                SCORE.broker_restarts += 1
            if spec.get("mysql_disconnect"):
                assert kill_mysql_sessions(site.database) > 0
                SCORE.mysql_disconnects += 1
    assert chaos.owed_hit, f"no master was killed at {owed}: {SCORE.points}\n{site.log_tail()}"
    score_run(site)
    SCORE.runs += 1


def pytest_generate_tests(metafunc):
    if "index" in metafunc.fixturenames:
        metafunc.parametrize("index", range(len(plan(metafunc.config.getoption("--long")))))


def test_the_job_survives_faults(index, request, seed, make_site):
    runs = plan(request.config.getoption("--long"))
    rng = random.Random(seed * 1000 + index)
    site = make_site(EVENTS, {"chunks": 24, "sleep": 0.15, "fault_every": 7, "slice_rows": SLICE_ROWS}, hot=HOT,
                     lease=2.0, lost_after=4.0, split=SPLIT, max_queue=BOUND)
    try:
        run_under_faults(site, rng, runs[index], PUBLISH_POINTS[index % len(PUBLISH_POINTS)])
    except BaseException:
        print(f"reproduce with: pytest tests/faults --fault-seed {seed}")
        raise


def test_totals_meet_the_bar(request):
    """The suite's own acceptance: enough of each fault, and nothing lost, wrong or counted twice."""
    if SCORE.runs < len(plan(request.config.getoption("--long"))):
        pytest.skip("the runs above did not all run")
    assert SCORE.master_kills >= 20 and SCORE.worker_kills >= 20, SCORE.line()
    assert SCORE.broker_restarts >= 1 and SCORE.mysql_disconnects >= 1, SCORE.line()
    assert all(SCORE.points.get(p) for p in PUBLISH_POINTS), f"master kills by failpoint: {SCORE.points}"
    assert SCORE.slices and SCORE.splits, SCORE.line()  # ranges handed on, and split at the phase's end
    score = (SCORE.lost, SCORE.unexpected, SCORE.wrong, SCORE.duplicated, SCORE.leftover)
    assert score == (0, 0, 0, 0, 0), SCORE.line()
