"""`swarm status RUN` as an operator reads it: errors exactly as recorded, recovered messages apart, live."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from swarm.cli import EXIT_OK, EXIT_USAGE, main
from swarm.ledger import MessageState, RunStatus
from swarm.report import print_status, status_dict, status_view, watch_status
from tests.support.contracts.ledger import LEASE, PHASE, RUN, known, message

# Brackets rich would read as markup, an emoji code, and a line longer than any terminal.
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "jobs/merchant_daily.py", line 88, in scan\n'
    '    amount = row[b"e:amount"]\n'
    'KeyError: [b"e:amount"] [bold]not bold[/bold] :warning: [red]x\n'
    + "x" * 300
)


def fail(ledger, msg, state: str, error: str) -> None:
    ledger.release(msg.id, ledger.claim(RUN, PHASE, msg, "w1", LEASE).token, state, error)


def finish(ledger, msg) -> None:
    ledger.complete(msg.id, ledger.claim(RUN, PHASE, msg, "w1", LEASE).token, RUN, PHASE, [], {})


def shown(ledger, width: int = 80) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    print_status(ledger.get_run(RUN), ledger, console=console)
    return console.export_text()


def test_a_traceback_is_shown_exactly_as_recorded(ledger):
    dead = known(ledger, message(1))
    fail(ledger, dead, MessageState.DEAD, TRACEBACK)
    ledger.update_run(RUN, error='phase map: 1 dead-lettered; first: KeyError: [b"e:amount"]')
    out = shown(ledger)
    assert TRACEBACK in out
    assert 'error: phase map: 1 dead-lettered; first: KeyError: [b"e:amount"]' in out
    assert f"dead {dead.id} (attempts 1):" in out


def test_a_message_that_failed_then_succeeded_is_recovered_not_failed(ledger):
    recovered, dead = message(1), message(2)
    known(ledger, recovered, dead)
    for _ in range(4):
        fail(ledger, recovered, MessageState.QUEUED, TRACEBACK)
    finish(ledger, recovered)
    fail(ledger, dead, MessageState.DEAD, "Abort: bad row")
    out = shown(ledger, width=400)
    failures, recovered_part = out.split("recovered (1)")
    assert f"dead {dead.id}" in failures and recovered.id not in failures
    assert f"done {recovered.id} after 5 attempts: {'x' * 300}" in recovered_part
    doc = status_dict(ledger.get_run(RUN), ledger)
    assert [f["id"] for f in doc["failures"]] == [dead.id]
    assert [(f["id"], f["state"], f["error"]) for f in doc["recovered"]] == [
        (recovered.id, MessageState.DONE, TRACEBACK)]


def test_a_message_still_being_retried_is_shown_as_retrying(ledger):
    msg = known(ledger, message(1))
    fail(ledger, msg, MessageState.QUEUED, "Fault: HBase busy")
    out = shown(ledger)
    assert f"retrying {msg.id} (attempts 1):\nFault: HBase busy" in out and "recovered" not in out


def test_a_running_run_shows_how_long_it_has_been_running(ledger):
    known(ledger, message(1))
    run = ledger.get_run(RUN)
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(status_view(run, status_dict(run, ledger), now=run.created_at + 125))
    out = console.export_text()
    assert "running for 2m 05s" in out and "took" not in out


def test_a_finished_run_shows_how_long_it_took(ledger):
    finish(ledger, known(ledger, message(1)))
    ledger.update_run(RUN, status=RunStatus.DONE, finished=True)
    run = ledger.get_run(RUN)
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(status_view(run, status_dict(run, ledger), now=run.created_at + 10_000))
    assert f"took {run.finished_at - run.created_at:.1f}s" in console.export_text()


class Views:
    """Stands in for the ledger as ``watch_status`` reads it: a run that finishes at the ``done_at``-th look."""

    def __init__(self, ledger, done_at: int | None = None):
        self.ledger, self.done_at, self.looks = ledger, done_at, 0

    def __call__(self):
        self.looks += 1
        if self.looks == self.done_at:
            self.ledger.update_run(RUN, status=RunStatus.DONE, finished=True)
        run = self.ledger.get_run(RUN)
        return run, status_dict(run, self.ledger)


def terminal() -> Console:
    return Console(width=100, force_terminal=True, color_system=None, file=io.StringIO())


def test_watch_redraws_until_the_run_finishes(ledger):
    known(ledger, message(1))
    views, slept = Views(ledger, done_at=3), []
    console = terminal()
    run = watch_status(views, 5.0, console=console, sleep=slept.append)
    assert (run.status, views.looks, slept) == (RunStatus.DONE, 3, [5.0, 5.0])
    last_view = console.file.getvalue().rsplit(RUN, 1)[1]
    assert last_view.split("\n")[0].split()[0] == "done" and "took" in last_view


def test_watch_stops_after_the_refreshes_asked_for(ledger):
    known(ledger, message(1))
    views, slept = Views(ledger), []
    run = watch_status(views, 1.0, console=terminal(), refreshes=4, sleep=slept.append)
    assert (run.status, views.looks, len(slept)) == (RunStatus.RUNNING, 4, 3)


def test_ctrl_c_ends_the_watch_quietly(ledger):
    known(ledger, message(1))
    views = Views(ledger)

    def interrupted(seconds: float) -> None:
        if views.looks == 2:
            raise KeyboardInterrupt

    run = watch_status(views, 1.0, console=terminal(), sleep=interrupted)
    assert (run.status, views.looks) == (RunStatus.RUNNING, 2)


@pytest.fixture
def site(tmp_path, monkeypatch, ledger):
    (tmp_path / "swarm.toml").write_text(f'[backends]\nledger = "sqlite:///{tmp_path}/ledger.db"\n')
    monkeypatch.chdir(tmp_path)
    return ledger


def test_the_command_watches_a_running_run(site, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    known(site, message(1))
    assert main(["status", RUN, "--watch", "--interval", "0.01", "--refreshes", "2"]) == EXIT_OK
    assert "running for" in capsys.readouterr().out


@pytest.mark.parametrize("argv, says", [
    (["--watch", "--json"], "--watch redraws a view for a terminal; --json prints one snapshot"),
    (["--watch", "--interval", "0"], "--interval must be more than 0"),
    (["--watch", "--refreshes", "0"], "--refreshes must be 1 or more"),
    (["--refreshes", "2"], "--refreshes goes with --watch"),
])
def test_watch_options_that_cannot_work_are_refused(site, capsys, argv, says):
    known(site, message(1))
    assert main(["status", RUN, *argv]) == EXIT_USAGE
    assert says in capsys.readouterr().err


def test_the_json_keeps_failures_and_recovered_apart(site, capsys):
    recovered = known(site, message(1))
    fail(site, recovered, MessageState.QUEUED, "Fault: HBase busy")
    finish(site, recovered)
    assert main(["status", RUN, "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["failures"] == [] and [f["error"] for f in doc["recovered"]] == ["Fault: HBase busy"]


def test_a_running_run_shows_what_is_in_force_on_its_job_and_a_finished_one_does_not(ledger):
    from swarm.ledger import ControlState

    msg = known(ledger, message(1))
    ledger.mark_queued([msg.id])  # published: open until it is done
    ledger.set_control("nightly", "read", ControlState.PAUSED, "ops@h", "region server")
    ledger.set_control("nightly", "", ControlState.DRAINING, "ops@h", "deploy")
    assert "control: nightly: paused: read; draining (1 message(s) still open)" in shown(ledger, width=200)
    doc = status_dict(ledger.get_run(RUN), ledger)
    assert doc["control"]["paused"]["read"]["reason"] == "region server"
    assert (doc["control"]["drain"]["drained"], doc["control"]["drain"]["open"]) == (False, 1)
    finish(ledger, msg)
    assert "nightly: paused: read; drained" in shown(ledger, width=200)
    ledger.update_run(RUN, status=RunStatus.DONE, finished=True)
    assert "control:" not in shown(ledger, width=200)
    assert status_dict(ledger.get_run(RUN), ledger)["control"] is None
