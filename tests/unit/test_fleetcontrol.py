"""What is in force on a job, read from the controls: a stage's pause, the job's drain, reload generations."""
from __future__ import annotations

from swarm.fleetcontrol import InForce, describe_line, open_work, summary
from swarm.ledger import Control, ControlState
from tests.support.contracts.ledger import known, message


def control(job, stage, state, generation=1):
    return Control(job, stage, state, generation, 0.0, "ops@h", "")


def test_a_stage_is_paused_by_its_own_pause_or_its_jobs():
    now = InForce("j", (control("j", "scan", ControlState.PAUSED), control("k", "", ControlState.PAUSED)))
    assert now.paused("scan") is not None and now.paused("reduce") is None  # another job's pause is not this one's
    whole = InForce("j", (control("j", "", ControlState.PAUSED),))
    assert whole.paused("scan") is whole.paused("reduce") is whole.controls[0]
    assert whole.draining is None


def test_a_reload_generation_is_the_fleets_and_the_jobs():
    now = InForce("j", (control("", "", ControlState.RELOAD, 4), control("j", "", ControlState.RELOAD, 2),
                        control("k", "", ControlState.RELOAD, 9)))
    assert now.generation == (4, 2)
    assert InForce("j").generation == (0, 0)


def test_a_drain_is_over_once_nothing_of_the_jobs_running_runs_is_queued_or_claimed(ledger):
    msgs = [message(1), message(2)]
    known(ledger, *msgs)  # job "nightly": planned, not yet published
    ledger.set_control("nightly", "", ControlState.DRAINING, "ops@h", "deploy")
    assert open_work(ledger, "nightly") == 0  # planned work is not open: the master holds it back
    ledger.mark_queued([msgs[0].id])
    doc = summary(ledger, "nightly")
    assert (doc["drain"]["drained"], doc["drain"]["open"], doc["drain"]["reason"]) == (False, 1, "deploy")
    assert describe_line(doc) == "nightly: draining (1 message(s) still open)"
    ledger.set_control("nightly", "", ControlState.PAUSED, "ops@h", "")
    line = describe_line(summary(ledger, "nightly"))
    assert line == "nightly: paused: every stage; draining (1 message(s) still open)"
    assert describe_line(summary(ledger, "other")) == ""
