"""Workers and the master count what they do in Prometheus metrics, served over HTTP with health endpoints."""
import socket
import threading
import urllib.error
import urllib.request

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY

from swarm.errors import BackendError
from swarm.metrics import ReadinessCheck, backend_probes, serve_metrics, url_passwords
from swarm.testing import run_job
from tests.support.waiting import wait_until
from tests.unit.toyjob import job


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_messages_latency_retries_and_master_counts_are_recorded(ledger, tables):
    tables.create_table("out", ["f"])
    before_done = sample("swarm_messages_total", job="toy", stage="sink", outcome="done")
    before_retry = sample("swarm_retries_total", job="toy", stage="sink")
    before_calls = sample("swarm_handler_seconds_count", job="toy", stage="double")
    before_claims = sample("swarm_claim_seconds_count", job="toy", stage="double")
    before_commits = sample("swarm_commit_seconds_count", job="toy", stage="double")
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"count": 4, "behaviour": {"2": "flaky"}})
    assert run.status == "done"
    assert sample("swarm_messages_total", job="toy", stage="sink", outcome="done") - before_done == 4
    assert sample("swarm_retries_total", job="toy", stage="sink") - before_retry == 1
    assert sample("swarm_handler_seconds_count", job="toy", stage="double") - before_calls == 4
    assert sample("swarm_claim_seconds_count", job="toy", stage="double") - before_claims >= 4  # one a delivery
    assert sample("swarm_commit_seconds_count", job="toy", stage="double") - before_commits == 4  # batches of 1
    assert sample("swarm_master_messages", run=run.id, phase="main", state="done") == 8


def test_metrics_are_served_over_http():
    port = serve_metrics(0, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "swarm_messages_total" in body and "swarm_handler_seconds_bucket" in body


# the health endpoints --------------------------------------------------------------


def get(port: int, path: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, errors included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fails(message: str):
    def probe():
        raise BackendError(message)
    return probe


def test_each_path_answers_for_itself_and_others_are_404():
    ready = ReadinessCheck({"broker": lambda: 0, "ledger": lambda: 3, "tables": list})
    port = serve_metrics(0, addr="127.0.0.1", ready=ready)
    status, kind, body = get(port, "/metrics")
    assert (status, kind) == (200, CONTENT_TYPE_LATEST) and "swarm_messages_total" in body
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/readyz")[::2] == (200, "broker: ok\nledger: ok\ntables: ok\n")
    for path in ("/", "/metric", "/metrics/x", "/favicon.ico"):
        assert get(port, path)[0] == 404


def test_readyz_is_503_naming_the_backend_that_failed_without_its_password():
    ready = ReadinessCheck({"broker": lambda: 0,
                            "ledger": fails("MySQL ledger mysql://swarm:s3cret@db1:3306/swarm: (2003) refused; "
                                            "password s3cret"),
                            "tables": list},
                           secrets=url_passwords(["mysql://swarm:s3cret@db1:3306/swarm", "memory://"]))
    port = serve_metrics(0, addr="127.0.0.1", ready=ready)
    status, _, body = get(port, "/readyz")
    assert status == 503
    assert "broker: ok\n" in body and "tables: ok\n" in body
    assert "ledger: MySQL ledger mysql://swarm:***@db1:3306/swarm: (2003) refused; password ***" in body
    assert "s3cret" not in body
    assert get(port, "/healthz")[0] == 200  # alive, only not ready


def test_a_hung_backend_is_reported_not_waited_for_and_not_probed_twice_at_once():
    release, calls, clock = threading.Event(), [], Clock()

    def hangs():
        calls.append(1)
        release.wait(30)

    check = ReadinessCheck({"ledger": hangs, "broker": lambda: 0}, timeout=0.05, clock=clock)
    first = check()
    assert first.failed == {"ledger": "no answer within 0.05 s"}
    clock.now += 10
    second = check()
    assert second.failed == {"ledger": "no answer yet to the previous check (over 0.05 s)"}
    assert len(calls) == 1  # still the one call in flight
    release.set()
    wait_until(lambda: check_after(check, clock).ready, "the ledger probe to answer again", timeout=10, every=0.01)
    assert len(calls) == 2


def check_after(check: ReadinessCheck, clock: Clock):
    clock.now += 10
    return check()


def test_the_answer_is_kept_for_a_moment():
    calls, clock = [], Clock()
    check = ReadinessCheck({"broker": lambda: calls.append(1)}, ttl=1.5, clock=clock)
    assert check().ready and check().ready
    assert len(calls) == 1
    clock.now += 1.6
    check()
    assert len(calls) == 2


class NoSchema:
    def schema_version(self):
        return None


def test_the_probes_ask_each_backend(broker, ledger, tables):
    before = ReadinessCheck(backend_probes(broker, ledger, tables, "swarm.toy.double"))()
    assert list(before.failed) == ["broker"] and "not declared" in before.failed["broker"]  # not serving yet
    broker.declare(["swarm.toy.double"])
    assert ReadinessCheck(backend_probes(broker, ledger, tables, "swarm.toy.double"))().ready
    answer = ReadinessCheck(backend_probes(broker, NoSchema(), tables, "swarm.toy.double"))()
    assert list(answer.failed) == ["ledger"] and "swarm db init" in answer.failed["ledger"]


def test_master_and_worker_serve_on_their_own_port_and_address(broker, ledger, tables):
    from swarm import config
    from swarm.commands.kit import serve_metrics as _serve_metrics
    from tests.unit.toyjob import job

    args = (job, "double", broker, ledger, tables)
    assert _serve_metrics(config.load(None, env={}), "master", *args) is None  # metrics_port 0: not served
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    cfg = config.load(None, env={"SWARM_MASTER_METRICS_PORT": str(port), "SWARM_MASTER_METRICS_BIND": "127.0.0.1"})
    broker.declare(["swarm.toy.double"])
    assert _serve_metrics(cfg, "master", *args) == port
    assert get(port, "/readyz")[::2] == (200, "broker: ok\nledger: ok\ntables: ok\n")


def test_a_port_in_use_is_logged_and_the_process_goes_on(broker, ledger, tables, caplog):
    from swarm import config
    from swarm.commands.kit import serve_metrics as _serve_metrics
    from tests.unit.toyjob import job

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = config.load(None, env={"SWARM_WORKER_METRICS_PORT": str(port)})
        assert _serve_metrics(cfg, "worker", job, "double", broker, ledger, tables) is None
    assert f"cannot serve metrics on 127.0.0.1:{port} (worker.metrics_bind, metrics_port)" in caplog.text
