"""Fault injection: the nightly job on the real services while things die, scored like Jepsen.

Across its runs the suite SIGKILLs the master and workers at random instants
and at named failpoints (between planning and publishing, mid-publish, at a
barrier, while finishing; after a worker's table writes, after its publish,
after its ledger commit), restarts the broker once, drops every MySQL
connection once, and injects handler faults. After each run the summary must
equal the reference, the ledger must show every message done and none
counted twice, and the stage queues must be empty.

Reproduce a failure with ``pytest tests/faults --fault-seed N``; ``--long``
runs more.
"""
from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import time

import pytest

from swarm.broker import dead_letter_queue, stage_queue
from swarm.brokers.rabbitmq import RabbitBroker
from swarm.ledger import MessageState, PhaseState
from tests.support.mysql import kill_mysql_sessions
from tests.support.rabbitmq import rabbitmqctl, ready
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.faults, pytest.mark.integration]

EVENTS = 6_000
MASTER_POINTS = ["master.after_plan", "master.mid_publish", "master.after_publish", "master.barrier",
                 "master.finish"]
WORKER_POINTS = ["worker.after_apply", "worker.after_publish", "worker.after_complete"]


@dataclasses.dataclass
class Score:
    runs: int = 0
    master_kills: int = 0
    worker_kills: int = 0
    broker_restarts: int = 0
    mysql_disconnects: int = 0
    handler_faults: int = 0
    lost: int = 0  # reference rows missing from the summary
    unexpected: int = 0  # summary rows the reference does not have
    wrong: int = 0  # rows present in both but different
    duplicated: int = 0  # rows counted more than once
    leftover: int = 0  # messages still on a queue after the drain
    seed: int | None = None

    def line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items() if k != "seed")


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
    """Keeps a master running to completion while killing it and the workers."""

    def __init__(self, site: Site, rng: random.Random, kills: int):
        self.site, self.rng = site, rng
        self.master_quota = self.worker_quota = kills
        self.master: subprocess.Popen | None = None

    def start_master(self) -> None:
        """While kills are owed, every master dies: at a failpoint it will reach, unless killed sooner."""
        env = {}
        if self.master_quota > 0:
            env["SWARM_FAILPOINTS"] = f"{self.rng.choice(self._reachable_points())}=1"
        self.master = self.site.start_master(env)

    def _reachable_points(self) -> list[str]:
        ledger = self.site.ledger()
        run = f"{JOB}@date={DATE}"
        if any(ledger.phase_state(run, phase) in (None, PhaseState.PLANNED) for phase in ("map", "reduce")):
            return MASTER_POINTS
        return ["master.barrier", "master.finish"]  # a resumed master passes these every time

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
            self._master_killed()
            self.start_master()
        self._replace_dead_workers()
        if self.master_quota > 0 and self.rng.random() < 0.6:
            self.master.send_signal(signal.SIGKILL)
            self.master.wait()
            self._master_killed()
            self.start_master()
        if self.worker_quota > 0 and self.rng.random() < 0.8:
            victim = self.rng.choice([w for w in self.site.workers if w.poll() is None])
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        time.sleep(self.rng.uniform(0.2, 0.8))
        return False

    def _master_killed(self) -> None:
        self.master_quota -= 1
        SCORE.master_kills += 1

    def _replace_dead_workers(self) -> None:
        for w in list(self.site.workers):
            if w.poll() is not None:
                assert w.returncode == -signal.SIGKILL, f"worker exited {w.returncode}\n{self.site.log_tail()}"
                self.site.workers.remove(w)
                self.worker_quota -= 1
                SCORE.worker_kills += 1
                self.start_worker()


def score_run(site: Site) -> None:
    ledger = site.ledger()
    run_id = f"{JOB}@date={DATE}"
    run = ledger.get_run(run_id)
    assert run is not None and run.status == "done", (run, site.log_tail())
    counters = ledger.counters(run_id)
    SCORE.duplicated += max(0, counters.get("rows", 0) - EVENTS)
    assert set(ledger.counts(run_id)) == {MessageState.DONE}
    written, expected = site.exact()
    SCORE.lost += len(set(expected) - set(written))
    SCORE.unexpected += len(set(written) - set(expected))
    SCORE.wrong += sum(1 for k in set(written) & set(expected) if written[k] != expected[k])
    SCORE.handler_faults += sum(1 for f in ledger.failures(run_id, limit=10_000) if "injected fault" in (f.error or ""))
    # The drain: workers skip the duplicates re-published while things died (some wait in delay
    # queues); then every stage queue, delay queue and dead-letter queue must be empty.
    try:
        wait_until(lambda: not waiting(site), "the queues to drain", timeout=90, every=0.1)
    except AssertionError:
        pass  # scored below as leftover
    site.stop()
    left = waiting(site)
    SCORE.leftover += sum(left.values())
    assert not left, f"messages left after the drain: {left}"
    assert counters == {"rows": EVENTS, "merchants": 40}


def waiting(site: Site) -> dict[str, int]:
    """Messages on the job's queues (with their delay queues) and dead-letter queues, where not zero."""
    broker = RabbitBroker(site.urls["broker"])
    try:
        counts = {}
        for stage in ("scan", "reduce"):
            queue = stage_queue(JOB, stage)
            counts[queue] = broker.depth(queue)
            counts[dead_letter_queue(queue)] = ready(site.vhost, dead_letter_queue(queue))
        return {q: n for q, n in counts.items() if n}
    finally:
        broker.close()


def run_under_faults(site: Site, rng: random.Random, spec: dict) -> None:
    chaos = Chaos(site, rng, spec["kills"])
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
    score_run(site)
    SCORE.runs += 1


def pytest_generate_tests(metafunc):
    if "index" in metafunc.fixturenames:
        metafunc.parametrize("index", range(len(plan(metafunc.config.getoption("--long")))))


def test_the_job_survives_faults(index, request, seed, make_site):
    runs = plan(request.config.getoption("--long"))
    rng = random.Random(seed * 1000 + index)
    site = make_site(EVENTS, {"chunks": 24, "sleep": 0.15, "fault_every": 7}, lease=2.0, lost_after=4.0)
    try:
        run_under_faults(site, rng, runs[index])
    except BaseException:
        print(f"reproduce with: pytest tests/faults --fault-seed {seed}")
        raise


def test_totals_meet_the_bar(request):
    """The suite's own acceptance: enough of each fault, and nothing lost, wrong or counted twice."""
    if SCORE.runs < len(plan(request.config.getoption("--long"))):
        pytest.skip("the runs above did not all run")
    assert SCORE.master_kills >= 20 and SCORE.worker_kills >= 20, SCORE.line()
    assert SCORE.broker_restarts >= 1 and SCORE.mysql_disconnects >= 1, SCORE.line()
    score = (SCORE.lost, SCORE.unexpected, SCORE.wrong, SCORE.duplicated, SCORE.leftover)
    assert score == (0, 0, 0, 0, 0), SCORE.line()
