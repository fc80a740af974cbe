"""The operator's night on the real services: outages wait, refusals refuse at once, runs can be cancelled."""
from __future__ import annotations

import socket
import time

import pytest

from swarm.ledger import MessageState
from tests.integration.conftest import mysql_admin
from tests.integration.fleet import DATE, JOB, Site, wait_until
from tests.integration.rabbitmq_support import amqp_url
from tests.integration.test_pipeline import EVENTS, finish, run_id

RETRY_BUDGET = 0.5 + 1 + 2 + 4 + 8  # seconds: slowjob's stages retry 5 times from 0.5 s, doubling


@pytest.fixture
def site(make_site):
    return make_site(EVENTS, {"chunks": 16, "sleep": 0.05})


@pytest.mark.own_thrift
def test_a_thrift_outage_longer_than_every_retry_budget_ends_exact_with_no_dead_letter(site):
    for _ in range(2):
        site.start_worker()
    master = site.start_master()
    wait_until(lambda: site.ledger().counts(run_id()).get(MessageState.DONE, 0) >= 2, "some progress")
    site.hbase.stop()
    time.sleep(RETRY_BUDGET * 1.5)  # every message that meets it would have spent its retries by now
    site.hbase.start()
    finish(site, master)  # done, counters exact, summary equal to the reference
    ledger = site.ledger()
    assert all(f.state == MessageState.DONE for f in ledger.failures(run_id()))  # some waited; none failed
    done = site.cli("dlq", "list", "--job", JOB, "--json")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout
    said = "".join(p.read_text(errors="replace") for p in site.logs.glob("*worker*"))
    per_worker = said.count("is unreachable")
    assert 1 <= per_worker <= 2 * 2, said[-3000:]  # once per outage and worker (reads and writes may differ)
    assert "is back after" in said


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_second_master_refuses_with_exit_3_also_with_metrics_on(site):
    port = free_port()
    first = site.start_master({"SWARM_MASTER_METRICS_PORT": str(port)})
    try:
        wait_until(lambda: site.ledger().counts(run_id()).get("queued", 0) > 0, "the first master running")
        second = site.start_master({"SWARM_MASTER_METRICS_PORT": str(port)})
        assert second.wait(timeout=60) == 3, site.log_tail()
        log = sorted(site.logs.iterdir())[-1].read_text()
        assert f"another master already runs {run_id()}" in log and f":{first.pid}:" in log
        assert "Address already in use" not in log
    finally:
        first.kill()
        first.wait()


def test_a_wrong_password_exits_2_at_once_naming_the_backend(site, tmp_path):
    admin = mysql_admin()
    with admin.cursor() as cur:
        cur.execute("CREATE USER IF NOT EXISTS 'swarm_night'@'127.0.0.1' IDENTIFIED BY 'right-pass'")
        cur.execute(f"GRANT SELECT ON `{site.database}`.* TO 'swarm_night'@'127.0.0.1'")
    try:
        cases = {
            "ledger": ({"SWARM_BACKENDS_LEDGER": f"mysql://swarm_night:wrong-pass@127.0.0.1:3306/{site.database}"},
                       ["master", JOB, "--date", DATE], "error 1045"),
            "broker": ({"SWARM_BACKENDS_BROKER": amqp_url(site.vhost, password="wrong-pass")},
                       ["worker", "--job", JOB], "login refused"),
            "grants": ({"SWARM_BACKENDS_LEDGER": f"mysql://swarm_night:right-pass@127.0.0.1:3306/{site.database}"},
                       ["db", "migrate"], "error 11"),  # 1142: a command denied
        }
        for name, (env, argv, says) in cases.items():
            started = time.monotonic()
            done = site.cli(*argv, env=env)
            assert done.returncode == 2, f"{name}: {done.returncode}\n{done.stderr}"
            assert says in done.stderr and "wrong-pass" not in done.stderr + done.stdout, done.stderr
            assert time.monotonic() - started < 60, f"{name} waited instead of refusing"
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP USER IF EXISTS 'swarm_night'@'127.0.0.1'")
        admin.close()


def test_runs_cancel_on_mariadb_refuses_while_the_master_holds_the_run_then_stops_it_with_force(site):
    master = site.start_master()  # no worker: it waits in its first phase
    wait_until(lambda: site.ledger().counts(run_id()).get("queued", 0) > 0, "the master running")
    refused = site.cli("runs", "cancel", run_id(), "--reason", "wrong input")
    assert refused.returncode == 3 and f":{master.pid}:" in refused.stderr, refused.stderr
    forced = site.cli("runs", "cancel", run_id(), "--reason", "wrong input", "--force")
    assert forced.returncode == 0, forced.stderr
    assert master.wait(timeout=60) == 1
    run = site.ledger().get_run(run_id())
    assert (run.status, run.error) == ("cancelled", "cancelled: wrong input")
    site.start_worker()  # its queued work is dropped, not dead-lettered
    wait_until(lambda: all(ready == 0 for ready in _ready(site)), "the dropped work gone from the queues")
    done = site.cli("dlq", "list", "--job", JOB, "--json")
    assert done.returncode == 0 and done.stdout.strip() == "[]"


def _ready(site: Site) -> list[int]:
    from swarm.broker import stage_queue
    from tests.integration.rabbitmq_support import ready

    return [ready(site.vhost, stage_queue(JOB, s)) for s in ("scan", "reduce")]
