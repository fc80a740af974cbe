"""A failed run, or one past its deadline, runs the alert command with a JSON description."""
import json
import sys
import threading
import time

from master.coordinator import Master, MasterSettings
from swarm.alerts import command_alert
from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.local import local_fleet
from tests.unit.toyjob import job, use_sink

PARAMS = {"date": "2026-11-22"}


def recorder(tmp_path):
    out = tmp_path / "alerts.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    return out, command_alert(f"{sys.executable} -c \"{script}\"")


def events(out):
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def run(ledger, tables, alert, options, deadline=None, before=lambda: None):
    hub = MemoryHub()
    tables.create_table("out", ["f"])
    settings = MasterSettings(poll=0.05, options=options, deadline=deadline)
    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 1, options=options):
        before()
        return Master(job, PARAMS, MemoryBroker(hub), ledger, tables, settings, alert=alert).run()


def test_a_failed_run_alerts_with_the_reason(tmp_path, ledger, tables):
    out, alert = recorder(tmp_path)
    result = run(ledger, tables, alert, {"count": 2, "behaviour": {"2": "abort"}})
    assert result.status == "failed"
    [event] = events(out)
    assert (event["event"], event["run"], event["params"]) == ("run_failed", "toy@date=2026-11-22", PARAMS)
    assert "2 is not allowed" in event["error"]


def test_a_missed_deadline_alerts_once_and_the_run_goes_on(tmp_path, ledger, tables, monkeypatch):
    out, alert = recorder(tmp_path)
    gate = threading.Event()
    original = job.stages["sink"]
    use_sink(monkeypatch, lambda ctx, msg: (gate.wait(10), original.handler(ctx, msg))[1])
    threading.Timer(1.0, gate.set).start()
    result = run(ledger, tables, alert, {"count": 2}, deadline=time.time() - 1)
    assert result.status == "done"
    [event] = events(out)
    assert event["event"] == "deadline_missed" and event["phase"] == "main"


def test_a_broken_alert_command_does_not_break_the_run(ledger, tables):
    alert = command_alert("/nonexistent/alert-hook")
    result = run(ledger, tables, alert, {"count": 1, "behaviour": {"0": "abort"}})
    assert result.status == "failed"


def test_the_master_waits_out_a_ledger_that_is_down_at_start(ledger, tables, monkeypatch):
    from swarm.errors import BackendError

    failures = iter([BackendError("MySQL down"), BackendError("MySQL down")])
    real_open = ledger.open_run

    def flaky_open(*args):
        error = next(failures, None)
        if error:
            raise error
        return real_open(*args)

    monkeypatch.setattr(ledger, "open_run", flaky_open)
    result = run(ledger, tables, lambda event: None, {"count": 2})
    assert result.status == "done"
