"""`swarm autoscale` under a real supervisord: a backlog adds workers, an empty queue drains them to min."""
from __future__ import annotations

import subprocess

import pytest

from tests.support.supervisord import Supervisord, assert_exact
from tests.support.waiting import wait_until

EVENTS = 8_000
MIN, MAX = 1, 3


@pytest.fixture
def site(make_site):
    # Enough work that the two workers the backlog adds are running for seconds,
    # not for the instant between their start (startsecs) and their drain.
    return make_site(EVENTS, {"chunks": 96, "sleep": 0.5})


@pytest.fixture
def supervisord(site):
    sv = Supervisord(site, MAX, autoscale={"min": MIN, "max": MAX, "interval": 0.5, "up_depth": 2,
                                           "down_idle_seconds": 2.0})
    sv.start()
    yield sv
    sv.stop()


def test_a_backlog_adds_workers_and_an_empty_queue_drains_them_to_min(site, supervisord):
    sv = supervisord
    most = [0]

    def count(n: int):
        def check() -> bool:
            running = len(sv.running())
            most[0] = max(most[0], running)
            return running == n
        return check

    # The workers do not start by themselves under the autoscaler: it brings up min of them.
    wait_until(count(MIN), f"{MIN} worker running", timeout=30, every=0.1)

    master = site.start_master()  # 96 map chunks at half a second each: far more than one worker prefetches
    try:
        wait_until(count(MAX), f"{MAX} workers running", timeout=60, every=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{site.log_tail()}\n{sv.log_tail()}") from None
    try:
        assert master.wait(timeout=240) == 0, site.log_tail() + sv.log_tail()
    except subprocess.TimeoutExpired:
        master.kill()
        raise
    assert_exact(site, EVENTS)  # workers drained mid-run lost nothing

    def drained() -> bool:
        states = sorted(p["statename"] for p in sv.workers().values())
        return states == sorted(["RUNNING"] * MIN + ["STOPPED"] * (MAX - MIN))

    wait_until(drained, f"back down to {MIN} worker, the others stopped", timeout=60, every=0.1)
    stopped = [p for p in sv.workers().values() if p["statename"] == "STOPPED"]
    assert all(p["exitstatus"] == 0 for p in stopped), sv.log_tail()  # drained, not killed
    assert most[0] == MAX
    scaler = (sv.logs / "swarm-autoscale.log").read_text()
    assert "start swarm-worker-01" in scaler or "start swarm-worker-02" in scaler
    assert "drain swarm-worker-02" in scaler
