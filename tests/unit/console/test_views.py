"""What the pages compute: ETAs, the plot's buckets and points, the pools read from the workers' metrics."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from swarm.console import fleet, views
from swarm.ledger import Message, MessageState, Run, RunStatus


def test_an_eta_goes_by_rows_when_rows_are_counted_else_by_messages():
    # 10 open, 20 done that read 2,000 rows: 100 rows a message; 50 rows a second -> 1,000 rows in 20 s
    assert views.eta(10, 20, 2000, 1.0, 50.0) == "20.0s (by rows)"
    assert views.eta(10, 20, 0, 0.5, 0.0) == "20.0s (by messages)"
    assert views.eta(10, 20, 2000, 0.0, 0.0) == "no progress in the last minute"
    assert views.eta(10, 0, 0, 0.0, 0.0) == "none done yet"
    assert views.eta(0, 20, 2000, 0.0, 0.0) == "done" and views.eta(0, 0, 0, 0.0, 0.0) == ""


def test_a_plot_has_at_most_its_points_whatever_the_length_of_the_run():
    assert views.plot_bucket(30) == 1.0
    assert views.plot_bucket(600) == 5.0
    assert views.plot_bucket(6 * 3600) == 300.0
    for seconds in (1, 119, 121, 1000, 20_000, 400_000):
        assert seconds / views.plot_bucket(seconds) <= views.POINTS or views.plot_bucket(seconds) == 3600.0


def test_the_plot_counts_each_stages_messages_in_their_buckets(ledger):
    ledger.open_run("j@date=d", "j", {"date": "d"})
    ledger.update_run("j@date=d", status=RunStatus.DONE, finished=True)
    run = ledger.get_run("j@date=d")
    msgs = [Message(f"m{i}", "a" if i < 3 else "b", f"c{i}", b"x") for i in range(5)]
    ledger.save_plan(run.id, "p", msgs)
    for i in range(5):  # done at known times: 3 of a in the run's first second, 2 of b two seconds later
        ledger._write("UPDATE swarm_messages SET state = ?, updated_at = ? WHERE id = ?",
                      (MessageState.DONE, run.created_at + (0.2 if i < 3 else 2.2), f"m{i}"))
    doc = views.throughput(Run(**{**run.__dict__, "finished_at": run.created_at + 3}), ledger)
    assert doc["stages"] == ["a", "b"] and doc["bucket"] == 1.0
    xs, a, b = doc["data"]
    assert sum(a) == 3 and sum(b) == 2 and len(xs) == len(a) == len(b) >= 3
    assert a.index(3.0) + 2 == b.index(2.0)


def test_pools_are_read_from_a_workers_metrics():
    registry = CollectorRegistry()
    busy = Gauge("swarm_pool_busy", "", ["job", "stage"], registry=registry)
    limit = Gauge("swarm_pool_limit", "", ["job", "stage"], registry=registry)
    busy.labels("nightly", "scan").set(3)
    limit.labels("nightly", "scan").set(8)
    limit.labels("nightly", "reduce").set(2)
    pools = fleet.parse_pools(generate_latest(registry).decode())
    assert pools == {("nightly", "scan"): {"busy": 3.0, "limit": 8.0}, ("nightly", "reduce"): {"limit": 2.0}}


def test_a_host_that_does_not_answer_is_shown_as_such_with_its_password_hidden():
    [host] = fleet.hosts(["http://ops:hunter2-secret@127.0.0.1:9/"], timeout=3)
    [pools] = fleet.pools(["http://scrape:hunter2-secret@127.0.0.1:9/metrics"], timeout=3)
    for found in (host, pools):
        assert found.error and "hunter2" not in found.error + found.url and "***" in found.url
