"""A night's score after faults, as Jepsen scores a run: lost, unexpected, wrong, duplicated, leftover.

Both fault suites (``tests/faults``: processes killed; ``tests/network``: the network failed)
score each night they run with ``score_night``.
"""
from __future__ import annotations

import collections
import dataclasses

from swarm.broker import dead_letter_queue, stage_queue
from swarm.brokers.rabbitmq import RabbitBroker
from swarm.ledger import MessageState, PublishState
from tests.support.rabbitmq import ready
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

STAGES = ("scan", "reduce")
MERCHANTS = 40  # of the generated day (Site.generate)


@dataclasses.dataclass
class Tally:
    lost: int = 0  # reference rows missing from the summary
    unexpected: int = 0  # summary rows the reference does not have
    wrong: int = 0  # rows present in both but different
    duplicated: int = 0  # rows counted more than once
    leftover: int = 0  # messages still on a queue after the drain

    def add(self, other: "Tally") -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def clean(self) -> bool:
        return not any(dataclasses.astuple(self))

    def line(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())


def score_night(site: Site, events: int, drain: float = 90) -> Tally:
    """The night's tally, once its master has finished: the run must be done and its result published.

    The drain: workers skip the duplicates re-published while things failed (some wait in
    delay queues) for up to ``drain`` seconds; then every stage queue, delay queue and
    dead-letter queue should be empty. The workers are stopped after it.
    """
    tally = Tally()
    ledger = site.ledger()
    run_id = f"{JOB}@date={DATE}"
    try:
        run = ledger.get_run(run_id)
        assert run is not None and run.status == "done", (run, site.log_tail())
        pub = ledger.publication(run_id)  # the night: its first run's id
        assert pub is not None and (pub.run_id, pub.state) == (run_id, PublishState.PUBLISHED), pub
        counters = ledger.counters(run_id)
        tally.duplicated += max(0, counters.get("rows", 0) - events)
        assert set(ledger.counts(run_id)) == {MessageState.DONE}, ledger.counts(run_id)
    finally:
        ledger.close()
    written, expected = site.exact()
    tally.lost += len(set(expected) - set(written))
    tally.unexpected += len(set(written) - set(expected))
    tally.wrong += sum(1 for k in set(written) & set(expected) if written[k] != expected[k])
    try:
        wait_until(lambda: not waiting(site), "the queues to drain", timeout=drain, every=0.1)
    except AssertionError:
        pass  # scored below as leftover
    site.stop()
    tally.leftover += sum(waiting(site).values())
    assert counters.get("merchants") == MERCHANTS, counters
    return tally


def waiting(site: Site) -> dict[str, int]:
    """Messages on the job's queues (with their delay queues) and dead-letter queues, where not zero."""
    broker = RabbitBroker(site.urls["broker"])
    try:
        counts = {}
        for stage in STAGES:
            queue = stage_queue(JOB, stage)
            counts[queue] = broker.depth(queue)
            counts[dead_letter_queue(queue)] = ready(site.vhost, dead_letter_queue(queue))
        return {q: n for q, n in counts.items() if n}
    finally:
        broker.close()


@dataclasses.dataclass
class SuiteScore:
    """A suite's tallies per scenario, and what struck in each; merged across pytest-xdist's processes."""

    seed: int | None = None
    hosts: str = ""
    runs: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    tallies: dict[str, Tally] = dataclasses.field(default_factory=dict)
    seen: dict[str, collections.Counter] = dataclasses.field(default_factory=dict)

    def record(self, scenario: str, tally: Tally, seen: collections.Counter, runs: int = 1) -> None:
        self.runs[scenario] += runs
        self.tallies.setdefault(scenario, Tally()).add(tally)
        self.seen.setdefault(scenario, collections.Counter()).update(seen)

    def total(self) -> Tally:
        total = Tally()
        for tally in self.tallies.values():
            total.add(tally)
        return total

    def lines(self) -> list[str]:
        out = [f"seed {self.seed}"]
        for name, tally in self.tallies.items():
            seen = ", ".join(f"{k} {v:g}" for k, v in sorted(self.seen[name].items()))
            out.append(f"  {name:14} nights={self.runs[name]} {tally.line()}" + (f"; {seen}" if seen else ""))
        out.append(f"  {'total':14} nights={sum(self.runs.values())} {self.total().line()}")
        return out

    def to_json(self) -> dict:
        return {"seed": self.seed, "hosts": self.hosts, "runs": dict(self.runs),
                "tallies": {k: dataclasses.asdict(v) for k, v in self.tallies.items()},
                "seen": {k: dict(v) for k, v in self.seen.items()}}

    def merge(self, data: dict) -> None:
        """Add what another process scored (``to_json``)."""
        self.seed = data["seed"] if self.seed is None else self.seed
        self.hosts = self.hosts or data["hosts"]
        for name, tally in data["tallies"].items():
            self.record(name, Tally(**tally), collections.Counter(data["seen"][name]), data["runs"][name])


NETWORK = SuiteScore()  # the network suite's (tests/network), printed by tests/conftest.py
