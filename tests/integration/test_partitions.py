"""Partitions: a worker cut off from the ledger while it works (partitions, scenario 1).

Worker A reaches MySQL through a fault proxy that then black-holes: its
renewals stall, its leases run out, and the master re-publishes its messages
to worker B, which finishes the night. A's handlers return only after that.
The ledger fences A's records by their lease token; its table writes are not
fenced there, so A must not make them: nothing may land in the tables after B
finished the phase. Nor may A's records or messages change the result.
"""
from __future__ import annotations

import time

import pytest

from swarm.ledger import MessageState
from tests.integration.test_pipeline import EVENTS, finish, run_id
from tests.support.faultproxy import FaultProxy
from tests.support.mysql import mysql_url
from tests.support.net import HOST
from tests.support.site import Site
from tests.support.slowjob import FIRST_ATTEMPT_PAUSE
from tests.support.waiting import wait_until
from workers.jobs.merchant_daily import PARTIALS

PAUSE = 8.0  # A's handlers: longer than a lease and its takeover, so phase map is through when they return
LOST = "its lease may end before its table writes"


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 8, "sleep": 0.3}, lease=3.0)


def writes_after(site: Site, moment: float) -> list[tuple[bytes, bytes, float]]:
    """Every cell of the partial counts written after ``moment`` (epoch seconds): row, column, when."""
    conn = site.hbase.happybase()
    try:
        rows = conn.table(PARTIALS).scan(include_timestamp=True)
        return [(row, col, ts / 1000) for row, cells in rows for col, (_, ts) in cells.items() if ts / 1000 > moment]
    finally:
        conn.close()


def map_finished(site: Site) -> float:
    """When the last message of phase ``map`` was recorded done (the ledger's clock: the server's, this host's)."""
    ((at,),) = site.query("SELECT MAX(updated_at) FROM swarm_messages WHERE phase = 'map' AND state = %s",
                          (MessageState.DONE.value,))
    return float(at)


def test_a_worker_cut_off_from_the_ledger_past_its_lease_writes_nothing_late(site):
    with FaultProxy((HOST, 3306)) as proxy:
        a_config = site.write_config("worker-a", ledger=mysql_url(site.database, port=proxy.port))
        a = site.swarm(a_config, "worker", "--job", "merchant_slow", env={FIRST_ATTEMPT_PAUSE: str(PAUSE)})
        master = site.start_master()
        wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.CLAIMED, 0) > 0, "a claim by worker A")
        proxy.blackhole()  # A's renewals stall from now on; its handlers pause on
        cut = time.monotonic()
        site.start_worker()  # B: takes A's messages over once their leases run out
        finish(site, master)
        done_at = map_finished(site)
        # A's threads each hold a batch of two, handled in turn: by then A has written, or decided not to
        time.sleep(max(0.0, cut + 2 * PAUSE + 3 - time.monotonic()))
        assert writes_after(site, done_at + 0.5) == [], site.log_tail(a)
        assert LOST in site.log_of(a).read_text(errors="replace")
        proxy.passing()
        site.stop([a], timeout=5)  # its calls on the black-holed connections end only at their 60 s time-out
    written, expected = site.exact()
    assert written == expected
    assert set(site.ledger().counts(run_id())) == {MessageState.DONE}
