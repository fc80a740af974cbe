"""A night's result on the real services: reruns as generations, checks that hold a result, publishing by hand.

The example job (``merchant_daily``) runs on RabbitMQ, MariaDB and HBase,
its workers as OS processes and its master, reruns and the operator's
``swarm publish`` and ``swarm reject`` as ``swarm`` commands. Each summary
is compared row by row and cell by cell with the single-process reference
over the events as they are at that moment.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from swarm import Delete, Put
from swarm.backends import open_tables
from swarm.envelope import decode
from swarm.exits import EXIT_FAILED, EXIT_HELD, EXIT_OK, EXIT_USAGE
from swarm.ledger import MessageState, PublishState, RunStatus
from swarm.stage import staging_table
from tests.support import ROOT
from tests.support.site import DATE, Site
from workers.jobs import merchant_daily as md

JOB = "merchant_daily"
EVENTS = 2_000  # a night's events: about 200 orders, so a normal night is well within the checks' ±30%
NIGHTS = ["2026-11-18", "2026-11-19", "2026-11-20"]  # before DATE, the night that goes wrong


def run_of(date: str, rerun: int = 0) -> str:
    return f"{JOB}@date={date}" + (f"+r{rerun}" if rerun else "")


class Night:
    """The site with ``merchant_daily`` configured: its commands, its events and its summary by date."""

    def __init__(self, site: Site):
        self.site = site
        self.config = site.config_file("daily", {
            "jobs": {"modules": ["workers.jobs.merchant_daily"]},
            "worker": {"lease": site.lease},
            "master": {"poll": 0.2, "lost_after": site.lost_after},
            f"options.{JOB}": {"chunks": 4},
        })
        self.tables = open_tables(site.urls["tables"])
        self.ledger = site.ledger()

    def close(self) -> None:
        self.tables.close()
        self.ledger.close()

    def swarm(self, *args: str) -> subprocess.CompletedProcess:
        """A ``swarm`` command with the job's config, run to its end."""
        return subprocess.run([sys.executable, "-m", "swarm.cli", "--config", str(self.config), *args],
                              cwd=self.site.tmp, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              capture_output=True, text=True, timeout=180)

    def start_workers(self, count: int = 2) -> None:
        for _ in range(count):
            self.site.workers.append(self.site.swarm(self.config, "worker", "--job", JOB))

    def master(self, date: str, expect: int = EXIT_OK) -> subprocess.CompletedProcess:
        return self.expect(expect, "master", JOB, "--date", date)

    def rerun(self, date: str, stage: str, *more: str, expect: int = EXIT_OK) -> subprocess.CompletedProcess:
        return self.expect(expect, "rerun", JOB, "--date", date, "--from-stage", stage, *more)

    def expect(self, code: int, *args: str) -> subprocess.CompletedProcess:
        done = self.swarm(*args)
        assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}\n" \
                                        f"{self.site.log_tail(lines=15)}"
        return done

    # data ------------------------------------------------------------------------

    def generate(self, date: str, events: int = EVENTS) -> None:
        md.generate(self.tables, date, events, merchants=40, customers=800)

    def events(self, date: str) -> list[tuple[bytes, dict]]:
        return list(self.tables.scan(md.EVENTS, prefix=md.day_prefix(date)))

    def delete(self, keys: list[bytes]) -> None:
        self.tables.apply([Delete(md.EVENTS, key) for key in keys])

    def summary(self, date: str) -> dict:
        return md.summary(self.tables, date)

    def reference(self, date: str) -> dict:
        return md.reference(self.tables, date)

    def generation(self, table: str, run: str) -> int:
        """How many rows ``run`` wrote to ``table`` (intermediate or staging) under its own prefix."""
        return sum(1 for _ in self.tables.scan(table, prefix=f"{run}/".encode()))


@pytest.fixture
def night(make_site):
    site = make_site(EVENTS, {})  # DATE's events, generated as merchant_daily reads them, and the job's tables
    night = Night(site)
    night.start_workers()
    yield night
    night.close()


def assert_exact(night: Night, date: str) -> dict:
    """The published summary of ``date`` is the reference over its events now, row by row and cell by cell."""
    written, expected = night.summary(date), night.reference(date)
    assert expected, f"{date}: no events"
    assert sorted(written) == sorted(expected)
    for key, cells in expected.items():
        assert written[key] == cells, key
    return written


def published(night: Night, date: str) -> str:
    """The run whose result the night shows; the publication must be finished."""
    pub = night.ledger.publication(run_of(date))
    assert pub is not None and pub.state == PublishState.PUBLISHED, pub
    return pub.run_id


def test_reruns_from_scan_and_from_reduce_give_the_reference_over_the_changed_source(night):
    first, r1, r2 = run_of(DATE), run_of(DATE, 1), run_of(DATE, 2)
    night.master(DATE)
    before = assert_exact(night, DATE)
    assert published(night, DATE) == first

    # The source changes: one merchant's events all go, and every fourth of the others.
    gone = b"m00002"
    rows = night.events(DATE)
    dropped = [k for i, (k, cells) in enumerate(rows) if cells[b"e:merchant"] == gone or i % 4 == 0]
    night.delete(dropped)
    assert night.reference(DATE) != before  # a result that folded in the first run's partials would differ

    said = night.rerun(DATE, "scan").stdout
    assert f"{r1} (reruns {first} from stage scan)" in said and "reads the source tables" in said
    after_scan = assert_exact(night, DATE)
    assert f"{DATE}/{gone.decode()}".encode() not in after_scan  # its row, published before, is gone
    assert night.ledger.get_run(r1).status == RunStatus.DONE and night.ledger.get_run(r1).reads == {}
    assert published(night, DATE) == r1

    # Both generations of the map phase's output are there; a rerun from reduce must read the latest only.
    assert night.generation(md.PARTIALS, first) and night.generation(md.PARTIALS, r1)
    plan = night.rerun(DATE, "reduce", "--dry-run").stdout
    assert f"{r2} (reruns {first} from stage reduce)" in plan
    assert f"phase map: not run; its output is read from {r1}" in plan
    assert f"reads {r1}; writes generation {r2}" in plan
    assert night.ledger.get_run(r2) is None  # a dry run runs nothing

    night.rerun(DATE, "reduce")
    assert night.ledger.get_run(r2).status == RunStatus.DONE
    assert night.ledger.get_run(r2).reads == {"map": r1}
    assert night.generation(md.PARTIALS, r2) == 0  # it ran no map
    assert assert_exact(night, DATE) == after_scan
    pub = night.ledger.publication(first)
    assert (pub.run_id, pub.previous, pub.state) == (r2, r1, PublishState.PUBLISHED)


def test_a_rerun_from_reduce_refuses_when_map_did_not_complete_and_force_goes_ahead(night):
    first, r1 = run_of(DATE), run_of(DATE, 1)
    rows = night.events(DATE)
    bad_key = next(k for k, cells in rows[len(rows) // 2:] if cells[b"e:type"] == b"purchase")
    night.tables.apply([Put(md.EVENTS, bad_key, {"e:amount": "n/a"}).normalized()])  # scan cannot parse it
    night.master(DATE, expect=EXIT_FAILED)  # its chunk retried, then dead: the map phase did not complete
    run = night.ledger.get_run(first)
    assert run.status == RunStatus.FAILED and "phase map" in run.error
    dead = [r for r in night.ledger.recorded(first, "map") if r.state != MessageState.DONE]
    assert [r.state for r in dead] == [MessageState.DEAD]
    chunk = dead[0].message.chunk
    assert night.ledger.publication(first) is None and night.summary(DATE) == {}

    refused = night.rerun(DATE, "reduce", expect=EXIT_USAGE)
    assert f"phase map did not complete in {first}: chunk(s) {chunk} not done (dead)" in refused.stderr, \
        refused.stderr
    assert night.ledger.get_run(r1) is None

    forced = night.rerun(DATE, "reduce", "--force").stdout
    assert f"--force: phase map did not complete in {first}: chunk(s) {chunk}" in forced
    rerun = night.ledger.get_run(r1)
    assert rerun.status == RunStatus.DONE and rerun.reads == {"map": first}
    assert "--force" in rerun.spec["forced"]
    assert published(night, DATE) == r1
    # What it read, exactly: the events of every chunk but the dead one, whose range it never folded.
    payload = decode(dead[0].message.body, night.site.keys()).payload
    night.delete([k for k, _ in rows if payload["start"] <= k < payload["stop"]])
    assert bad_key not in {k for k, _ in night.events(DATE)} and len(night.events(DATE)) < len(rows)
    assert_exact(night, DATE)


def test_a_night_far_from_the_usual_is_held_then_published_or_rejected_by_hand(night):
    for date in NIGHTS:
        night.generate(date)
        night.master(date)
        assert published(night, date) == run_of(date)
    shown = {date: assert_exact(night, date) for date in NIGHTS}

    # DATE has lost half its input: its orders are far under the median of the nights published before.
    rows = night.events(DATE)
    night.delete([k for k, _ in rows[::2]])
    held = night.master(DATE, expect=EXIT_HELD)
    assert f"{run_of(DATE)}: held" in held.stdout
    run = night.ledger.get_run(run_of(DATE))
    assert run.status == RunStatus.HELD and f"total:{md.SUMMARY}:s:orders" in run.error
    failed = [c.name for c in night.ledger.checks(run.id) if not c.passed]
    assert f"total:{md.SUMMARY}:s:orders" in failed, night.ledger.checks(run.id)
    assert night.ledger.publication(run.id) is None
    assert night.summary(DATE) == {}  # nothing of it shows
    assert night.generation(staging_table(md.SUMMARY), run.id) == len(night.reference(DATE))  # it waits
    assert {date: night.summary(date) for date in NIGHTS} == shown

    night.expect(EXIT_OK, "publish", run.id, "--reason", "half the shops were closed for the holiday")
    assert night.ledger.get_run(run.id).status == RunStatus.DONE
    assert published(night, DATE) == run.id
    assert_exact(night, DATE)
    assert [d.action for d in night.ledger.decisions(run.id)] == ["publish"]
    assert {date: night.summary(date) for date in NIGHTS} == shown

    # A published night rerun from scan after half its input went: held, and rejected, it keeps its result.
    date, source = NIGHTS[1], run_of(NIGHTS[1])
    night.delete([k for k, _ in night.events(date)[::2]])
    night.rerun(date, "scan", expect=EXIT_HELD)
    rerun = night.ledger.get_run(run_of(date, 1))
    assert rerun.status == RunStatus.HELD
    assert night.summary(date) == shown[date] and published(night, date) == source
    assert night.summary(date) != night.reference(date)  # the held result differs from what shows
    night.expect(EXIT_OK, "reject", rerun.id, "--reason", "the source lost rows; restore it first")
    rerun = night.ledger.get_run(rerun.id)
    assert rerun.status == RunStatus.REJECTED and rerun.error.startswith("rejected: ")
    assert [d.action for d in night.ledger.decisions(rerun.id)] == ["reject"]
    assert night.summary(date) == shown[date] and published(night, date) == source
    night.expect(EXIT_USAGE, "publish", rerun.id, "--reason", "changed my mind")  # rejected is final
    assert night.summary(date) == shown[date] and published(night, date) == source


def test_a_rerun_from_inside_a_phase_on_the_real_services(make_site):
    """``tally``'s map phase is split -> fold; fold had a bug, fixed; a rerun from fold redoes it and reduce."""
    from tests.unit import tallyjob as tally

    site = make_site(10, {})
    run, rerun = "tally@region=eu", "tally@region=eu+r1"

    def config(name: str, options: dict) -> str:
        sections: dict = {"jobs": {"modules": ["tests.unit.tallyjob"]}, "worker": {"lease": site.lease},
                          "master": {"poll": 0.2, "lost_after": site.lost_after}}
        if options:
            sections["options.tally"] = options
        return str(site.config_file(name, sections))

    def swarm(cfg: str, *args: str, expect: int = EXIT_OK) -> str:
        done = subprocess.run([sys.executable, "-m", "swarm.cli", "--config", cfg, *args], cwd=site.tmp,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == expect, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}\n" \
                                          f"{site.log_tail(lines=15)}"
        return done.stdout

    buggy, fixed = config("tally-buggy", {"fold_bug": 1}), config("tally-fixed", {})
    swarm(fixed, "tables", "create", "tally")
    tables = open_tables(site.urls["tables"])
    ledger = site.ledger()
    try:
        tally.load(tables, "eu", {f"{i:04x}": (f"shop{i % 7}", i % 1000) for i in range(0, 65536, 331)})
        workers = [site.swarm(Path(buggy), "worker", "--job", "tally") for _ in range(2)]
        swarm(buggy, "master", "tally", "--param", "region=eu")
        site.stop(workers)
        assert tally.published(tables, "eu") != tally.reference(tables, "eu")  # the bug, published

        site.workers += [site.swarm(Path(fixed), "worker", "--job", "tally") for _ in range(2)]
        plan = swarm(fixed, "rerun", "tally", "--param", "region=eu", "--from-stage", "fold", "--dry-run")
        assert f"phase map: stage(s) fold, from the messages {run} recorded" in plan
        swarm(fixed, "rerun", "tally", "--param", "region=eu", "--from-stage", "fold")
        assert ledger.get_run(rerun).status == RunStatus.DONE and ledger.get_run(rerun).spec["replay_from"] == run
        assert tally.published(tables, "eu") == tally.reference(tables, "eu")
        folds = [r for r in ledger.recorded(run, "map") if r.message.stage == "fold"]
        replayed = ledger.recorded(rerun, "map")
        assert {r.message.stage for r in replayed} == {"fold"} and len(replayed) == len(folds)  # split not rerun
        assert all(r.state == MessageState.DONE for r in replayed)
        assert ledger.publication(run).run_id == rerun
    finally:
        tables.close()
        ledger.close()
