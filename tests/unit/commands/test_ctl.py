"""``swarm ctl``: what it puts in force, what it lifts, what it says, and what it refuses."""
from __future__ import annotations

import json

import pytest

from swarm.cli import EXIT_OK, EXIT_USAGE, main
from swarm.ledger import ControlState


@pytest.fixture
def site(tmp_path, monkeypatch, ledger):
    (tmp_path / "swarm.toml").write_text(f'[backends]\nledger = "sqlite:///{tmp_path}/ledger.db"\n'
                                         '[jobs]\nmodules = ["tests.unit.toyjob"]\n')
    monkeypatch.chdir(tmp_path)
    return ledger


def in_force(ledger) -> set[tuple[str, str, str]]:
    return {(c.job, c.stage, c.state) for c in ledger.controls()}


def test_pause_resume_and_drain_put_and_lift_controls_in_the_ledger(site, capsys):
    assert main(["ctl", "pause", "toy", "sink", "--reason", "busy"]) == EXIT_OK
    assert "toy: stage sink paused" in capsys.readouterr().out
    assert main(["ctl", "pause", "toy"]) == EXIT_OK
    assert main(["ctl", "drain", "toy"]) == EXIT_OK
    assert in_force(site) == {("toy", "sink", "paused"), ("toy", "", "paused"), ("toy", "", "draining")}
    [paused] = [c for c in site.controls("toy") if c.stage == "sink"]
    assert paused.reason == "busy" and "@" in paused.issued_by
    capsys.readouterr()
    assert main(["ctl", "resume", "toy", "sink"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "pause of stage sink lifted" in out and "stage sink stays paused: every stage of toy is paused" in out
    assert main(["ctl", "resume", "toy"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "pause of every stage lifted" in out and "drain lifted" in out
    assert in_force(site) == set()
    assert main(["ctl", "resume", "toy"]) == EXIT_OK
    assert "nothing was paused or draining" in capsys.readouterr().out


def test_status_lists_what_is_in_force_and_whether_a_drain_is_over(site, capsys):
    assert main(["ctl", "status"]) == EXIT_OK
    assert "nothing paused or draining" in capsys.readouterr().out
    main(["ctl", "pause", "toy", "double", "--reason", "hbase"])
    main(["ctl", "drain", "toy"])
    main(["ctl", "reload"])
    capsys.readouterr()
    assert main(["ctl", "status", "toy"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "toy: stage double paused (by " in out and ": hbase)" in out
    assert "toy: drained: nothing queued or claimed" in out and "reload of the fleet: generation 1" in out
    assert main(["ctl", "status", "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["jobs"][0]["drain"]["drained"] is True and doc["reloads"]["*"]["generation"] == 1


def test_a_reload_raises_the_generation_of_the_fleet_or_of_one_job(site, capsys):
    for argv in (["ctl", "reload"], ["ctl", "reload"], ["ctl", "reload", "toy"]):
        assert main(argv) == EXIT_OK
    gens = {c.job: c.generation for c in site.controls() if c.state == ControlState.RELOAD}
    assert gens == {"": 2, "toy": 1}
    assert "reload 1 asked of every worker of toy" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("argv, says", [
    (["ctl", "pause", "nojob"], "no job named 'nojob'"),
    (["ctl", "pause", "toy", "ghost"], "job toy has no stage 'ghost'; its stages: double, sink"),
    (["ctl", "resume", "toy", "ghost"], "job toy has no stage 'ghost'"),
    (["ctl", "drain", "toy", "sink"], "a drain is of a whole job"),
    (["ctl", "pause"], "ctl pause: name the JOB"),
    (["ctl", "reload", "toy", "sink"], "no STAGE"),
    (["ctl", "reload", "nojob"], "no job named 'nojob'"),
])
def test_unknown_jobs_and_stages_and_what_cannot_be_are_refused(site, capsys, argv, says):
    assert main(argv) == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert site.controls() == []


def test_a_job_this_host_cannot_load_can_still_be_resumed(site, capsys):
    site.set_control("elsewhere", "", ControlState.PAUSED, "ops@h", "")
    assert main(["ctl", "resume", "elsewhere"]) == EXIT_OK
    assert "elsewhere: pause of every stage lifted" in capsys.readouterr().out
    assert site.controls() == []
