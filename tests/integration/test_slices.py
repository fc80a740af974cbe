"""Slices and straggler splitting on RabbitMQ + MariaDB + HBase, workers and masters as OS processes.

The example job's scan works through each chunk's range a slice at a time
(option ``slice_rows``); a worker killed between two slices loses nothing;
a skewed day, half of it in one chunk, is counted exactly once with its
rest split among the idle workers; a master killed between a split and its
publish leaves the parts to the next master.
"""
from __future__ import annotations

import signal
import subprocess

import pika

from swarm.broker import stage_queue
from swarm.ledger import MessageState
from swarm.slices import is_part
from tests.support.rabbitmq import amqp_url
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until

RUN = f"{JOB}@date={DATE}"
SPLIT = {"enabled": True, "ways": 4, "tail": 6, "min_rows": 400}  # a plain chunk holds ~500 rows, 250 after a slice


def finish(site: Site, master: subprocess.Popen, events: int) -> None:
    """The master ends with the run done, every message done, the summary exact and no row counted twice."""
    try:
        code = master.wait(timeout=240)
    except subprocess.TimeoutExpired:
        master.kill()
        raise AssertionError(f"master did not finish\n{site.log_tail()}") from None
    assert code == 0, site.log_tail()
    ledger = site.ledger()
    try:
        run = ledger.get_run(RUN)
        assert run is not None and run.status == "done", run
        assert ledger.counters(RUN) == {"rows": events, "merchants": 40}
        assert set(ledger.counts(RUN)) == {MessageState.DONE}
    finally:
        ledger.close()
    written, expected = site.exact()
    assert len(expected) == 40 and written == expected


def slices(site: Site) -> list[tuple[str, str]]:
    """The chunk and slice identity (seq) of each of the run's map messages."""
    return site.query("SELECT chunk, SUBSTRING_INDEX(id, '/', -1) FROM swarm_messages "
                      "WHERE run_id = %s AND phase = 'map'", (RUN,))


def test_a_worker_killed_between_two_slices_loses_nothing(make_site):
    """Killed after the ledger recorded a slice done with its rest, before the rest was published."""
    site = make_site(4000, {"chunks": 8, "slice_rows": 120, "sleep": 0.05}, lease=2.0, lost_after=3.0)
    doomed = site.start_worker({"SWARM_FAILPOINTS": "worker.after_complete=4"})
    master = site.start_master()
    wait_until(lambda: doomed.poll() is not None, "the worker killed at its failpoint", timeout=120, every=0.1)
    assert doomed.returncode == -signal.SIGKILL
    assert "failpoint worker.after_complete: killing process" in site.log_tail(doomed)
    site.workers.remove(doomed)
    site.start_worker()
    site.start_worker()
    finish(site, master, 4000)
    made = slices(site)
    assert sum("+" in seq for _, seq in made) >= 8 * 3  # ~500 rows a chunk, 120 a slice: 4 or 5 slices each
    assert not any(is_part(seq) for _, seq in made)  # splitting is off


def test_a_skewed_day_is_counted_exactly_once_with_its_rest_split(make_site):
    site = make_site(8000, {"chunks": 8, "slice_rows": 250, "sleep": 0.02}, hot=0.5, split=SPLIT)
    for _ in range(2):
        site.start_worker()
    finish(site, site.start_master(), 8000)
    parts = {chunk for chunk, seq in slices(site) if is_part(seq)}
    assert parts == {"r00003"}  # the hot chunk's rest was split among the idle threads, and only its


def test_a_master_killed_between_a_split_and_its_publish_leaves_the_parts_to_the_next(make_site):
    """The map plan waits unclaimed on no queue (purged): the master splits the hot chunk's root and dies."""
    site = make_site(8000, {"chunks": 8, "slice_rows": 500}, hot=0.5, lost_after=5.0,
                     split={"enabled": True, "ways": 4, "tail": 8, "min_rows": 1000})  # the hot chunk only
    master = site.start_master({"SWARM_FAILPOINTS": "master.after_split=1"})
    ledger = site.ledger()
    try:
        wait_until(lambda: ledger.counts(RUN, "map").get(MessageState.QUEUED, 0) == 8, "the plan queued",
                   timeout=120, every=0.1)
    finally:
        ledger.close()
    channel = pika.BlockingConnection(pika.URLParameters(amqp_url(site.vhost))).channel()
    assert channel.queue_purge(stage_queue(JOB, "scan")).method.message_count == 8  # lost in a worker, say
    channel.connection.close()
    assert master.wait(timeout=60) == -signal.SIGKILL
    assert "failpoint master.after_split: killing process" in site.log_tail(master)
    [(root, parts)] = site.query(
        "SELECT parent, COUNT(*) FROM swarm_messages WHERE run_id = %s AND parent IS NOT NULL GROUP BY parent",
        (RUN,))
    assert parts == 4 and root.endswith("/scan/0")  # recorded, and on no queue
    for _ in range(2):
        site.start_worker()
    finish(site, site.start_master(), 8000)  # it publishes the parts and the purged roots as lost work
    assert {"0:0", "0:1", "0:2", "0:3"} <= {seq for _, seq in slices(site)}  # (then maybe split again)
