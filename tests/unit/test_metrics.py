"""Workers and the master count what they do in Prometheus metrics, served over HTTP."""
import urllib.request

from prometheus_client import REGISTRY

from swarm.metrics import serve_metrics
from swarm.testing import run_job
from tests.unit.toyjob import job


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_messages_latency_retries_and_master_counts_are_recorded(ledger, tables):
    tables.create_table("out", ["f"])
    before_done = sample("swarm_messages_total", job="toy", stage="sink", outcome="done")
    before_retry = sample("swarm_retries_total", job="toy", stage="sink")
    before_calls = sample("swarm_handler_seconds_count", job="toy", stage="double")
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 4, "behaviour": {"2": "flaky"}})
    assert run.status == "done"
    assert sample("swarm_messages_total", job="toy", stage="sink", outcome="done") - before_done == 4
    assert sample("swarm_retries_total", job="toy", stage="sink") - before_retry == 1
    assert sample("swarm_handler_seconds_count", job="toy", stage="double") - before_calls == 4
    assert sample("swarm_master_messages", run=run.id, phase="main", state="done") == 8


def test_metrics_are_served_over_http():
    port = serve_metrics(0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "swarm_messages_total" in body and "swarm_handler_seconds_bucket" in body
