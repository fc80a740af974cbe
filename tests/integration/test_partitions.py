"""Partitions: a worker cut off from the ledger (scenario 1), or from the broker (scenario 2), while it works.

Worker A reaches MySQL through a fault proxy that then black-holes: its
renewals stall, its leases run out, and the master re-publishes its messages
to worker B, which finishes the night. A's handlers return only after that.
The ledger fences A's records by their lease token; its table writes are not
fenced there, so A must not make them: nothing may land in the tables after B
finished the phase. Nor may A's records or messages change the result.

In scenario 2 A reaches RabbitMQ through the proxy, which black-holes with
A's deliveries in hand. A still reaches the ledger and the tables: it finishes
them and records them done, but its acks never reach the broker, which hands
them to B once A's heartbeats stop; B must skip them. Then the link heals and
A reconnects. No message may be handled twice, nor counted twice.
"""
from __future__ import annotations

import re
import time
import urllib.request

import pytest

from swarm.ledger import MessageState
from tests.integration.test_pipeline import EVENTS, finish, run_id
from tests.support.faultproxy import FaultProxy
from tests.support.mysql import mysql_url
from tests.support.net import HOST, free_port
from tests.support.rabbitmq import amqp_url
from tests.support.site import JOB, Site
from tests.support.slowjob import FIRST_ATTEMPT_PAUSE
from tests.support.waiting import wait_until
from workers.jobs.merchant_daily import BUCKETS, PARTIALS

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


LOST_BROKER, REGAINED_BROKER = "; reconnecting in ", ": reconnected"  # serve's loop: the connection lost, back
BROKER_PAUSE = 4.0  # A's handlers: a thread's batch of two is through ~9 s after its claim, before the broker
# gives up on A (~15 s with heartbeat=5)


def outcomes(port: int, stage: str) -> dict[str, int]:
    """A worker's messages of ``stage`` so far by outcome (done, skipped...), from its /metrics."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {}
    for labels, value in re.findall(r"^swarm_messages_total\{(.*)\} (\S+)$", text, re.M):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if named["job"] == JOB and named["stage"] == stage:
            found[named["outcome"]] = int(float(value))
    return found


def skipped(port: int, stage: str) -> int:
    """Messages of ``stage`` a worker skipped so far (done, or in hand elsewhere); 0 while it is starting."""
    try:
        return outcomes(port, stage).get("skipped", 0)
    except OSError:
        return 0  # its /metrics is not up yet


def attempts_over(site: Site, most: int) -> list[tuple[str, str, int]]:
    """The run's messages claimed more than ``most`` times: id, state, attempts."""
    return site.query("SELECT id, state, attempts FROM swarm_messages WHERE run_id = %s AND attempts > %s",
                      (run_id(), most))


def test_a_worker_cut_off_from_the_broker_with_deliveries_in_hand_loses_and_duplicates_nothing(site):
    a_port, b_port = free_port(), free_port()
    with FaultProxy((HOST, 5672)) as proxy:
        a_config = site.write_config("worker-a", broker=amqp_url(site.vhost, port=proxy.port, heartbeat=5))
        a = site.swarm(a_config, "worker", "--job", JOB,
                       env={FIRST_ATTEMPT_PAUSE: str(BROKER_PAUSE), "SWARM_WORKER_METRICS_PORT": str(a_port)})
        master = site.start_master()
        wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.CLAIMED, 0) > 0, "a claim by worker A")
        proxy.blackhole()  # A's acks, heartbeats and deliveries stall from now on; its ledger and tables answer
        cut = time.monotonic()
        b = site.start_worker(env={"SWARM_WORKER_METRICS_PORT": str(b_port)})
        # The broker gives up on A's silent connection and hands its unacked deliveries to B, which finds them
        # done by A (or in A's hands): the acks A made meanwhile never left the black hole.
        wait_until(lambda: skipped(b_port, "scan") > 0, "A's scan deliveries at B", timeout=40, every=0.2)
        taken = time.monotonic() - cut
        done_cut_off = outcomes(a_port, "scan").get("done", 0)  # recorded in the ledger, acks held in the hole
        assert done_cut_off > 0, site.log_tail(a)
        proxy.passing()  # the partition heals: A hears that its connections are gone and reconnects
        log = site.log_of(a)
        wait_until(lambda: REGAINED_BROKER in log.read_text(errors="replace"), "A to reconnect", timeout=40,
                   every=0.2)
        healed = time.monotonic() - cut
        finish(site, master)
        print(f"A recorded {done_cut_off} scan(s) done while cut off; B had its deliveries {taken:.1f} s after "
              f"the cut; A was back {healed:.1f} s after it; the night ended {time.monotonic() - cut:.1f} s after it")
        text = log.read_text(errors="replace")
        assert LOST_BROKER in text and text.index(LOST_BROKER) < text.index(REGAINED_BROKER), site.log_tail(a)
        # Nothing handled twice: each message claimed once (no faults here, and the ledger answered everyone)...
        assert attempts_over(site, 1) == [], site.log_tail()
        # ... and recorded done by one worker: A, cut off, its scans; B skipped what the broker gave it back
        done = {stage: [outcomes(port, stage).get("done", 0) for port in (a_port, b_port)]
                for stage in ("scan", "reduce")}
        assert {stage: sum(n) for stage, n in done.items()} == {"scan": 8, "reduce": BUCKETS}, done
        site.stop([a, b], timeout=5)  # A's calls on the black-holed connections end at their time-outs
