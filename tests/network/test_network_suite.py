"""The network suite: the nightly job on test hosts of its own while the network between them fails.

The master runs on host ``master`` and a worker on each of ``w1`` and ``w2``: network
namespaces with veths and addresses of the suite's own (``tests.support.nethosts``), or,
where namespaces cannot be made, loopback fault proxies (``tests.support.loophosts``; the
summary says which, and why). Each host reaches RabbitMQ, MariaDB and two HBase Thrift
servers through forwarders of its own; its tables URL lists Thrift server A (a fault proxy
in front of HBase's Thrift server) before B (the server itself). The suite plays cron and
supervisord: a master that exits because a backend stayed away (75) or another master holds
the night (3) is started again while none runs; a worker that exits is started again.

The scenarios, one night each (issue order):

``worker-ledger``  w1 cut off from MariaDB, both ways, for longer than its lease while it
                   works; w2 takes its messages over.
``worker-broker``  w1 cut off from RabbitMQ with deliveries in hand, until the broker gives
                   up on it; then the link heals.
``master-broker``  the master cut off from RabbitMQ mid-publish: with its phase's plan
                   still part unpublished (the stage queues are bounded, so it publishes a
                   window at a time); then the link heals.
``master-ledger``  the master cut off from MariaDB while it holds the night's lock, past the
                   lock's time-out; a second master is started on w2, as a respawn elsewhere
                   would. The first must stand down (exit 3) once it hears of the second.
``thrift-silent``  Thrift server A black-holes (it takes connections and never answers):
                   calls end by their time-out and go on through B.
``slow-links``     every link at 200 ms each way with 5% of packets lost, the whole night.
``skewed-clock``   w2's wall clock minutes ahead or behind, the whole night.

Each night is scored lost / unexpected / wrong / duplicated / leftover
(``tests.support.scoring``), and must score zero; the suite also checks that each fault
struck (packets dropped, calls served by B, the first master stood down). The totals are
printed with the seed; ``pytest tests/network --network-seed N`` reproduces a run, and
``--long`` runs each scenario three times, with faults twice as long on nights twice as big.
"""
from __future__ import annotations

import collections
import os
import random
import threading
import time
from subprocess import Popen
from typing import Callable

import pytest

from swarm.exits import EXIT_LOCKED, EXIT_OK, EXIT_UNAVAILABLE
from swarm.ledger import MessageState
from tests.support.faultproxy import FaultProxy
from tests.support.loophosts import LoopHosts
from tests.support.net import HOST
from tests.support.nethosts import NetHosts, Unsupported, unavailable_reason
from tests.support.scoring import NETWORK, score_night
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.network, pytest.mark.integration]

RABBITMQ, MARIADB = 5672, 3306
RUN = f"{JOB}@date={DATE}"
EVENTS = 2_000
OPTIONS = {"chunks": 12, "sleep": 0.1}
BOUND = 6  # every stage queue's bound: the master publishes its 12 chunks a window at a time
LEASE, LOST_AFTER = 2.0, 4.0
LOCK_TIMEOUT = 8  # the ledger URL's lock_timeout: the server ends a master's lock session silent this long
THRIFT = "timeout_ms=3000&retries=6"  # a call on a silent Thrift server ends in 3 s; the store then tries the next
HOSTS = ("master", "w1", "w2")
SLOW_MS, LOSS_PCT = 200, 5
# Site settings of a scenario, where not the above: slow links get a lease and a lock's time-out that their
# round trips (400 ms, and seconds more for a lost packet) leave room in, still well under the defaults (60 s).
# Half the chunks too: each message takes seconds of round trips there.
SETTINGS = {"slow-links": {"lease": 10.0, "lost_after": 20.0, "lock_timeout": 30, "max_queue": 0,
                           "options": {**OPTIONS, "chunks": 6, "sleep": 0.0}}}
LOOPBACK_KNOB = "NETWORK_SUITE_HOSTS"  # =loopback: run on loopback fault proxies though namespaces could be made
PUBLISHED = "result published"  # the master's log, once it has promoted the night's result


SCORE = NETWORK  # what tests/conftest.py prints at the end, from every process that ran nights


class Night:
    """One night of the job on the hosts, the suite standing in for cron (the master) and supervisord (workers)."""

    def __init__(self, site: Site, hosts, thrift_a: FaultProxy, rng: random.Random, scale: float,
                 lock_timeout: float = LOCK_TIMEOUT):
        self.site, self.hosts, self.thrift_a, self.rng, self.scale = site, hosts, thrift_a, rng, scale
        self.lock_timeout = lock_timeout
        self.configs = {name: site.write_config(f"on-{name}", **self._urls(hosts[name])) for name in HOSTS}
        self.masters: list[tuple[str, Popen]] = []
        self.workers: dict[Popen, tuple[str, float]] = {}  # -> its host, its clock's offset
        self.seen: collections.Counter = collections.Counter()
        self._accounted: set[int] = set()
        self._begun = False
        self._error: BaseException | None = None

    def _urls(self, host) -> dict[str, str]:
        """The site's backends as a process on ``host`` reaches them: through its forwarders."""
        def at(port: int) -> str:
            address, forwarded = host.service(port)
            return f"{address}:{forwarded}"

        hbase = self.site.hbase
        return {
            "broker": self.site.urls["broker"].replace(f"{HOST}:{RABBITMQ}", at(RABBITMQ)),
            "ledger": self.site.urls["ledger"].replace(f"{HOST}:{MARIADB}", at(MARIADB))
            + f"?lock_timeout={self.lock_timeout}",
            "tables": f"hbase://{at(self.thrift_a.port)},{at(hbase.port)}?table_prefix={hbase.prefix}&{THRIFT}",
        }

    # processes ---------------------------------------------------------------------------

    def begin(self, skews: dict[str, float] | None = None) -> None:
        """A worker on w1 and on w2 (``skews``: a host's clock offset in seconds), the master on ``master``."""
        for on in ("w1", "w2"):
            self.start_worker(on, (skews or {}).get(on, 0.0))
        self.start_master()
        self._begun = True

    def start_master(self, on: str = "master") -> Popen:
        proc = self.site.spawn(["swarm.cli", "--config", str(self.configs[on]), "master", JOB, "--date", DATE],
                               label=f"master-{on}", wrap=self.hosts[on].command)
        self.masters.append((on, proc))
        return proc

    def start_worker(self, on: str, skew: float = 0.0) -> Popen:
        args = ["swarm.cli", "--config", str(self.configs[on]), "worker", "--job", JOB]
        if skew:
            args = ["tests.support.skewclock", f"{skew:g}", *args]
        proc = self.site.spawn(args, label=f"worker-{on}", wrap=self.hosts[on].command)
        self.site.workers.append(proc)
        self.workers[proc] = (on, skew)
        return proc

    def tend(self) -> bool:
        """One look, as cron and supervisord take: True once a master has finished the night and none runs."""
        for proc, (on, skew) in list(self.workers.items()):
            if proc.poll() is not None:
                assert proc.returncode == EXIT_UNAVAILABLE, (f"the worker on {on} exited {proc.returncode}\n"
                                                             f"{self.site.log_tail(proc)}")
                self.seen["worker restarts"] += 1
                del self.workers[proc]
                self.site.workers.remove(proc)
                self.start_worker(on, skew)
        codes = [proc.poll() for _, proc in self.masters]
        for (on, proc), code in zip(self.masters, codes):
            if code is not None and proc.pid not in self._accounted:
                self._accounted.add(proc.pid)
                assert code in (EXIT_OK, EXIT_LOCKED, EXIT_UNAVAILABLE), (f"the master on {on} exited {code}\n"
                                                                          f"{self.site.log_tail(proc)}")
                if code != EXIT_OK:
                    self.seen[f"master exits {code}"] += 1
        if EXIT_OK in codes:
            return None not in codes
        if self._begun and None not in codes:  # the night is not done and no master runs: cron starts one
            self.seen["master restarts"] += 1
            self.start_master()
        return False

    def run(self, trouble: Callable[["Night"], None], timeout: float = 420) -> None:
        """Run ``trouble`` in a thread (it begins the night) while tending the processes; until both are through."""
        thread = threading.Thread(target=self._trouble, args=(trouble,), name="trouble", daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout * self.scale
        while not (self.tend() and not thread.is_alive()):
            if self._error is not None:
                raise self._error
            assert time.monotonic() < deadline, f"the night did not finish\n{self.site.log_tail()}"
            time.sleep(0.3)
        if self._error is not None:
            raise self._error

    def _trouble(self, trouble: Callable[["Night"], None]) -> None:
        try:
            trouble(self)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
            self._error = exc
        finally:
            for name in HOSTS:
                self.hosts[name].heal()
            self.thrift_a.passing()

    # what the trouble waits for ----------------------------------------------------------

    def counts(self) -> dict[MessageState, int]:
        ledger = self.site.ledger()
        try:
            return ledger.counts(RUN)
        finally:
            ledger.close()

    def progressed(self, done: int = 3) -> None:
        """Wait until ``done`` messages of the night are done."""
        wait_until(lambda: self.counts().get(MessageState.DONE, 0) >= done, f"{done} messages done",
                   timeout=120 * self.scale, every=0.2)

    def seconds(self, low: float, high: float) -> float:
        return self.rng.uniform(low, high) * self.scale

    def cut(self, on: str, port: int, seconds: float, one_way: bool = False) -> int:
        """Partition host ``on`` from the service on ``port`` for ``seconds``; what it dropped.

        ``one_way``: by the seed, both ways or only what comes back to the host (half-open: what
        it sends lands, the answers are lost), where the hosts can (namespaces).
        """
        host = self.hosts[on]
        direction = self.rng.choice(["both", "in"]) if one_way and host.ONE_WAY else "both"
        self.seen[f"cut {direction}"] += 1
        host.partition(port, direction=direction)
        try:
            time.sleep(seconds)
            return self.dropped(on)
        finally:
            host.heal()
            self.seen["seconds cut off"] += round(seconds)

    def dropped(self, on: str) -> int:
        """What the partition of host ``on`` has dropped so far (packets, or on loopback connections stalled)."""
        host = self.hosts[on]
        count = sum(host.dropped().values())
        self.seen[f"{on} {host.DROPPED}"] += count
        return count


# the scenarios ---------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Night], None]] = {}


def scenario(trouble: Callable[[Night], None]) -> Callable[[Night], None]:
    SCENARIOS[trouble.__name__.replace("_", "-")] = trouble
    return trouble


@scenario
def worker_ledger(night: Night) -> None:
    night.begin()
    night.progressed()
    # past its lease, and past the master's look for lost messages after it
    assert night.cut("w1", MARIADB, LOST_AFTER + night.seconds(2.5 * LEASE, 4 * LEASE), one_way=True), \
        "w1 reached MariaDB"


@scenario
def worker_broker(night: Night) -> None:
    night.begin()
    night.progressed()
    # the broker gives up on a silent connection after 10-15 s
    assert night.cut("w1", RABBITMQ, night.seconds(14, 22), one_way=True), "w1 reached RabbitMQ all the same"


@scenario
def master_broker(night: Night) -> None:
    night.begin()
    planned = {}  # the counts at the cut: a phase published in part (queued, in hand or done) and in part not
    wait_until(lambda: mid_publish(night.counts(), planned), "a phase published in part", timeout=120 * night.scale,
               every=0.05)
    night.seen["planned, unpublished at the cut"] += planned[MessageState.PLANNED]
    assert night.cut("master", RABBITMQ, night.seconds(10, 20)), "the master reached RabbitMQ all the same"


def mid_publish(counts: dict[MessageState, int], seen: dict) -> bool:
    """Some of the night published and some still planned; ``seen`` keeps the counts that said so."""
    published = sum(n for state, n in counts.items() if state != MessageState.PLANNED)
    if published and counts.get(MessageState.PLANNED):
        seen.update(counts)
        return True
    return False


@scenario
def master_ledger(night: Night) -> None:
    night.begin()
    night.progressed()
    first = night.masters[-1][1]
    host = night.hosts["master"]
    host.partition(MARIADB)
    try:
        time.sleep(LOCK_TIMEOUT + night.seconds(2, 4))  # the server has ended the first master's lock session
        second = night.start_master("w2")
        time.sleep(night.seconds(4, 8))
        assert night.dropped("master"), "the master reached MariaDB all the same"
    finally:
        host.heal()
    # The first stands down: it exits 3 while the second holds the night, or finds the night done by it (0).
    wait_until(lambda: first.poll() is not None, "the first master to stand down", timeout=90 * night.scale)
    assert first.returncode in (EXIT_LOCKED, EXIT_OK), night.site.log_tail(first)
    assert second.poll() in (None, EXIT_OK), night.site.log_tail(second)
    night.seen[f"first master exits {first.returncode}"] += 1


def published(night: Night) -> int:
    """How many times a master of the night promoted its result."""
    return sum(night.site.log_of(proc).read_text(errors="replace").count(PUBLISHED) for _, proc in night.masters)


@scenario
def thrift_silent(night: Night) -> None:
    night.begin()
    night.progressed()
    to_b = lambda: sum(night.hosts[h].forwarders[night.site.hbase.port].accepted for h in HOSTS)  # noqa: E731
    before = to_b()
    night.thrift_a.blackhole()
    try:
        time.sleep(night.seconds(10, 20))
    finally:
        night.thrift_a.passing()
    night.seen["connections to B"] += to_b() - before
    assert to_b() > before, "no call went on through Thrift server B"


@scenario
def slow_links(night: Night) -> None:
    for name in HOSTS:
        try:
            night.hosts[name].delay(SLOW_MS, loss_pct=LOSS_PCT)
        except Unsupported:  # loopback: delay only
            night.hosts[name].delay(SLOW_MS)
    night.begin()
    night.seen["ms each way"] = SLOW_MS


@scenario
def skewed_clock(night: Night) -> None:
    offset = night.rng.choice([-1, 1]) * night.rng.uniform(120, 600)
    night.begin(skews={"w2": offset})
    night.seen["w2's clock off by s"] = round(offset)


# the suite -------------------------------------------------------------------------------------

def plan(long: bool) -> list[str]:
    return list(SCENARIOS) * (3 if long else 1)


def pytest_generate_tests(metafunc):
    if "index" in metafunc.fixturenames:
        runs = plan(metafunc.config.getoption("--long"))
        metafunc.parametrize("index", range(len(runs)), ids=[f"{i}-{name}" for i, name in enumerate(runs)])


@pytest.fixture(scope="module")
def seed(request):
    chosen = request.config.getoption("--network-seed")
    SCORE.seed = chosen if chosen is not None else random.SystemRandom().randrange(1_000_000)
    return SCORE.seed


@pytest.fixture
def hosts():
    """The test hosts: network namespaces, or loopback proxies where those cannot be made (or are not wanted)."""
    reason = "NETWORK_SUITE_HOSTS=loopback" if os.environ.get(LOOPBACK_KNOB) == "loopback" else unavailable_reason()
    made = LoopHosts() if reason else NetHosts()
    SCORE.hosts = made.kind + (f" (no network namespaces: {reason})" if reason else "")
    yield made
    made.close()


@pytest.fixture
def thrift_a(hbase_server):
    """Thrift server A: a fault proxy in front of HBase's Thrift server, listed first in every host's tables URL."""
    with FaultProxy((HOST, hbase_server.port), name="thrift-a") as proxy:
        yield proxy


def test_a_night_survives_its_network(index, request, seed, make_site, hosts, thrift_a):
    long = request.config.getoption("--long")
    name = plan(long)[index]
    scale = 2 if long else 1
    events = EVENTS * scale
    settings = {"lease": LEASE, "lost_after": LOST_AFTER, "lock_timeout": LOCK_TIMEOUT, "options": OPTIONS,
                "max_queue": BOUND, **SETTINGS.get(name, {})}
    lock_timeout, options = settings.pop("lock_timeout"), settings.pop("options")
    site = make_site(events, options, **settings)
    for host in HOSTS:
        hosts.add(host, ports=[RABBITMQ, MARIADB, thrift_a.port, site.hbase.port])
    night = Night(site, hosts, thrift_a, random.Random(seed * 1000 + index), scale, lock_timeout)
    try:
        night.run(SCENARIOS[name])
        tally = score_night(site, events)
        assert published(night) == 1, f"the result was promoted {published(night)} times\n{site.log_tail()}"
    except BaseException:
        print(f"reproduce with: pytest tests/network --network-seed {seed}")
        raise
    SCORE.record(name, tally, night.seen)
    assert tally.clean(), f"{name}: {tally.line()}\n{site.log_tail()}"


def test_totals_meet_the_bar(request):
    """Every scenario scored, and nothing lost, unexpected, wrong, counted twice or left over in any."""
    runs = plan(request.config.getoption("--long"))
    if sum(SCORE.runs.values()) < len(runs):
        pytest.skip("the nights above did not all run")
    assert set(SCORE.runs) == set(SCENARIOS), SCORE.runs
    assert SCORE.total().clean(), "\n".join(SCORE.lines())
