"""Clocks: a worker whose host's clock is minutes off the others' changes nothing (partitions, scenario 6).

Leases are written by workers and judged by the master, so they go by one
clock, the ledger server's (``swarm.ledgers.clock``). Here a worker reads a wall
clock ten minutes off, its monotonic clock untouched, as on a host whose clock
is set wrong (``tests.support.skewclock``). Were leases written by the worker's
own clock, one ten minutes behind would see every lease it takes expire at
once, and one ten minutes ahead would hold a dead worker's messages ten
minutes too long.
"""
from __future__ import annotations

import signal

import pytest

from swarm.ledger import MessageState
from tests.integration.test_pipeline import EVENTS, finish, run_id
from tests.support.site import JOB, Site
from tests.support.waiting import wait_until

SKEW = 600.0


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 8, "sleep": 0.3})


def skewed_worker(site: Site, seconds: float):
    """A worker on a host whose wall clock is ``seconds`` off (ahead; negative for behind)."""
    return site.spawn(["tests.support.skewclock", str(seconds), "swarm.cli", "--config", str(site.config),
                       "worker", "--job", JOB], label=f"worker-clock{seconds:+.0f}s")


def expired_leases(site: Site, master) -> int:
    """How often the master re-published messages because their lease had expired."""
    return site.log_of(master).read_text(errors="replace").count("whose lease expired")


def test_a_worker_whose_clock_is_ten_minutes_behind_holds_its_leases(site):
    worker = skewed_worker(site, -SKEW)
    master = site.start_master()
    finish(site, master)
    assert expired_leases(site, master) == 0, site.log_tail()
    assert "behind the ledger server's" in site.log_of(worker).read_text(errors="replace")


def test_the_leases_of_a_dead_worker_whose_clock_is_ten_minutes_ahead_end_on_time(site):
    ahead = skewed_worker(site, SKEW)
    master = site.start_master()
    wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.CLAIMED, 0) > 0, "a claim by the worker")
    ahead.send_signal(signal.SIGKILL)
    ahead.wait()
    site.start_worker()
    finish(site, master)  # waits 4 minutes at most: less than the ten its leases would have had by its clock
    assert expired_leases(site, master) > 0
