"""The systemd units in deploy/: the nightly master's service and timer, and supervisord's service.

Checked by ``systemd-analyze verify`` where it works here, and always by
reading them for the keys they must have; the nightly unit's command line
is run against a fake ``swarm``.
"""
from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.unit.test_nightly import DATE, Fake

DEPLOY = ROOT / "deploy"
NIGHTLY, TIMER, SUPERVISORD = "swarm-nightly@.service", "swarm-nightly@.timer", "swarm-supervisord.service"
JOB = "merchant_daily"


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, comment_prefixes=("#", ";"))
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def exec_start(name: str, instance: str = JOB) -> list[str]:
    return shlex.split(unit(name)["Service"]["ExecStart"].replace("%i", instance))


def test_the_nightly_service_runs_swarm_nightly_for_the_instances_job_as_the_service_user():
    service = unit(NIGHTLY)["Service"]
    argv = exec_start(NIGHTLY)
    assert argv[0] == "/opt/swarm/deploy/swarm-nightly" and argv[-1] == JOB
    assert argv[argv.index("--log") + 1] == f"/var/log/swarm/nightly-{JOB}.log"  # the file deploy/logrotate rotates
    assert (service["Type"], service["User"], service["UMask"]) == ("oneshot", "swarm", "0027")
    assert service["SuccessExitStatus"] == "3"  # another master holds the run: not a failure of this host


def test_the_timer_starts_the_service_of_its_job_each_night_and_after_a_missed_one():
    timer = unit(TIMER)["Timer"]
    assert timer["OnCalendar"] == "*-*-* 02:15:00"
    assert timer["Persistent"] == "true"
    assert timer["Unit"] == NIGHTLY.replace("@.", "@%i.")
    assert unit(TIMER)["Install"]["WantedBy"] == "timers.target"


def test_supervisord_runs_as_the_service_user_with_a_private_umask():
    service = unit(SUPERVISORD)["Service"]
    assert exec_start(SUPERVISORD)[:2] == ["/opt/swarm/.venv/bin/supervisord", "--nodaemon"]
    assert (service["User"], service["UMask"]) == ("swarm", "0027")


def test_the_nightly_command_line_starts_the_master_for_the_job(tmp_path):
    fake = Fake(tmp_path)
    fake.codes(0)
    argv = exec_start(NIGHTLY)
    argv[0] = str(DEPLOY / "swarm-nightly")
    for option, value in (("--swarm", fake.swarm), ("--log", fake.log)):
        argv[argv.index(option) + 1] = str(value)
    argv[-1:-1] = ["--date", DATE]  # the unit's own date is yesterday's
    done = subprocess.run(["sh", *argv], env=dict(os.environ, FAKE_DIR=str(tmp_path)), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert fake.masters() == [["--config", "/etc/swarm/swarm.toml", "master", JOB, "--date", DATE]]


def installed(text: str) -> str:
    """A unit's text with the install paths of the README pointed at this checkout."""
    return (text.replace("/opt/swarm/deploy/", f"{DEPLOY}/")
                .replace("/opt/swarm/.venv/bin/", f"{Path(sys.executable).parent}/"))


def systemd_analyze_works(tmp_path: Path) -> bool:
    if shutil.which("systemd-analyze") is None:
        return False
    probe = tmp_path / "swarm-probe.service"
    probe.write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    try:
        return subprocess.run(["systemd-analyze", "verify", str(probe)], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_systemd_analyze_verifies_the_units(tmp_path):
    if not systemd_analyze_works(tmp_path):
        pytest.skip("systemd-analyze verify does not work here; the tests above read the units instead")
    for name in (NIGHTLY, TIMER, SUPERVISORD):
        (tmp_path / name).write_text(installed((DEPLOY / name).read_text()))
    for name in (NIGHTLY, TIMER):  # an instance of each template, as `systemctl enable` makes one
        (tmp_path / name.replace("@.", f"@{JOB}.")).symlink_to(tmp_path / name)
    units = [str(tmp_path / n) for n in (f"swarm-nightly@{JOB}.service", f"swarm-nightly@{JOB}.timer", SUPERVISORD)]
    done = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=120)
    said = [line for line in (done.stdout + done.stderr).splitlines() if "swarm" in line]
    assert done.returncode == 0 and said == [], done.stdout + done.stderr
