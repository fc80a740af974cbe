"""deploy/swarm-nightly, the script cron runs, against a fake ``swarm`` that exits as told."""
from __future__ import annotations

import datetime
import grp
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT

SCRIPT = ROOT / "deploy" / "swarm-nightly"
DATE = "2026-11-22"
RUN = f"merchant_daily@date={DATE}"

FAKE = '''#!{python}
"""A stand-in for `swarm`: records its arguments; `master` exits with the next code from codes.txt."""
import json, os, pathlib, signal, sys, time

here = pathlib.Path(os.environ["FAKE_DIR"])
with open(here / "calls.txt", "a") as out:
    out.write(json.dumps(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:] if not a.startswith("--config")]
if "master" in sys.argv:
    codes = (here / "codes.txt").read_text().split()
    (here / "codes.txt").write_text(" ".join(codes[1:]))
    print("fake master running", flush=True)
    if codes[0] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if codes[0] == "hang":
        def stopped(*_):
            (here / "terminated").write_text("TERM")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stopped)
        (here / "hanging").write_text("yes")
        while True:
            time.sleep(0.05)
    sys.exit(int(codes[0]))
if "runs" in sys.argv:
    failed = here / "failed.json"
    if failed.exists():
        print(failed.read_text())
        sys.exit(0)
    sys.exit(int((here / "runs-exit.txt").read_text()) if (here / "runs-exit.txt").exists() else 0)
'''


class Fake:
    def __init__(self, tmp: Path):
        self.dir = tmp
        self.swarm = tmp / "swarm"
        self.swarm.write_text(FAKE.format(python=sys.executable))
        self.swarm.chmod(0o755)
        self.log = tmp / "log" / "nightly.log"

    def codes(self, *codes: str | int) -> None:
        (self.dir / "codes.txt").write_text(" ".join(map(str, codes)))

    def run_failed_in_ledger(self) -> None:
        (self.dir / "failed.json").write_text(json.dumps([{"id": RUN, "status": "failed"}], indent=2))

    def ledger_down(self) -> None:
        (self.dir / "runs-exit.txt").write_text("1")

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.txt"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def masters(self) -> list[list[str]]:
        return [c for c in self.calls() if "master" in c]

    def args(self, *extra: str, date: str | None = DATE) -> list[str]:
        dated = ["--date", date] if date else []
        return ["sh", str(SCRIPT), "--swarm", str(self.swarm), "--config", "/etc/swarm/swarm.toml",
                "--log", str(self.log), "--pause", "0", *dated, *extra, "merchant_daily"]

    def run(self, *extra: str, date: str | None = DATE) -> subprocess.CompletedProcess:
        env = dict(os.environ, FAKE_DIR=str(self.dir))
        return subprocess.run(self.args(*extra, date=date), env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def fake(tmp_path) -> Fake:
    return Fake(tmp_path)


def test_a_run_that_finishes_exits_0_quietly(fake):
    fake.codes(0)
    done = fake.run()
    assert done.returncode == 0
    assert done.stderr == ""  # nothing for cron to mail
    assert fake.masters() == [["--config", "/etc/swarm/swarm.toml", "master", "merchant_daily", "--date", DATE]]
    log = fake.log.read_text()
    assert "fake master running" in log and f"run {RUN} is done" in log


def test_the_date_defaults_to_yesterday(fake):
    fake.codes(0)
    before = datetime.date.today() - datetime.timedelta(days=1)
    assert fake.run(date=None).returncode == 0
    after = datetime.date.today() - datetime.timedelta(days=1)
    [call] = fake.masters()
    assert call[-1] in {before.isoformat(), after.isoformat()}


def test_a_master_killed_by_a_signal_is_restarted(fake):
    fake.codes("kill", "kill", 0)
    done = fake.run("--restarts", "3")
    assert done.returncode == 0
    assert len(fake.masters()) == 3
    assert fake.log.read_text().count("killed by signal 9") == 2


def test_a_backend_outage_longer_than_the_masters_patience_is_restarted(fake):
    fake.codes(75, 0)
    done = fake.run("--restarts", "3")
    assert done.returncode == 0
    assert len(fake.masters()) == 2
    assert "backend stayed unreachable" in fake.log.read_text()


def test_an_unexpected_error_in_the_master_is_a_crash_and_restarted(fake):
    fake.codes(70, 0)
    done = fake.run("--restarts", "3")
    assert done.returncode == 0
    assert len(fake.masters()) == 2
    assert "the master crashed (an unexpected error (exit 70)); restart 1 of 3" in fake.log.read_text()


def test_restarts_are_capped(fake):
    fake.codes("kill", "kill", "kill", 0)
    done = fake.run("--restarts", "2")
    assert done.returncode == 4
    assert len(fake.masters()) == 3  # the first start and two restarts
    assert "crashed 3 times" in done.stderr and str(fake.log) in done.stderr


def test_a_held_run_is_final_and_says_what_to_do(fake):
    fake.codes(5, 0)
    done = fake.run()
    assert done.returncode == 5
    assert len(fake.masters()) == 1
    assert f"run {RUN} is held: a check of its result failed; see: swarm status {RUN}, then swarm publish" \
        in done.stderr


def test_a_failed_run_is_final(fake):
    fake.codes(1, 0)
    fake.run_failed_in_ledger()
    done = fake.run()
    assert done.returncode == 1
    assert len(fake.masters()) == 1
    assert f"swarm status {RUN}" in done.stderr


def test_exit_1_without_a_failed_run_is_a_crash(fake):
    # e.g. Python died before the master could exit with a code of Swarm's: the run is still "running"
    fake.codes(1, 0)
    done = fake.run()
    assert done.returncode == 0
    assert len(fake.masters()) == 2
    assert "exit 1 without the run failed in the ledger" in fake.log.read_text()


def test_a_ledger_that_cannot_say_counts_as_a_crash(fake):
    fake.codes(1, 1)
    fake.ledger_down()
    done = fake.run("--restarts", "1")
    assert done.returncode == 4
    assert len(fake.masters()) == 2


def test_a_second_start_says_another_master_holds_the_run(fake):
    fake.codes(3)
    done = fake.run()
    assert done.returncode == 3
    assert len(fake.masters()) == 1  # not restarted
    assert f"another master holds run {RUN}; this start did nothing" in done.stderr


@pytest.mark.parametrize("code", [2, 127])
def test_other_exits_are_final(fake, code):
    fake.codes(code, 0)
    assert fake.run().returncode == code
    assert len(fake.masters()) == 1


def test_sigterm_reaches_the_master(fake):
    fake.codes("hang")
    env = dict(os.environ, FAKE_DIR=str(fake.dir))
    # Not pipes: a master left behind would hold them open and hang the test.
    proc = subprocess.Popen(fake.args(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (fake.dir / "hanging").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the master never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (fake.dir / "terminated").read_text() == "TERM"
    assert len(fake.masters()) == 1
    assert "got SIGTERM: stopping the master" in fake.log.read_text()


@pytest.mark.parametrize("args", [[], ["--restarts", "x", "job"], ["--bogus", "job"], ["--log"]])
def test_usage_errors_exit_2(fake, args):
    done = subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "swarm-nightly" in done.stderr or "usage" in done.stderr


def test_the_log_is_for_the_service_group_only(fake):
    fake.codes(0)
    assert fake.run().returncode == 0
    assert stat.S_IMODE(fake.log.stat().st_mode) == 0o640


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_copies_and_truncates_the_log_in_place(fake, tmp_path):
    fake.log = fake.dir / "log" / "nightly-merchant_daily.log"  # as deploy/crontab names it
    fake.codes(0, 0)
    assert fake.run().returncode == 0
    before = fake.log.read_text()
    me = f"su {pwd.getpwuid(os.getuid()).pw_name} {grp.getgrgid(os.getgid()).gr_name}" if os.geteuid() == 0 else ""
    rules = (ROOT / "deploy" / "logrotate").read_text()
    conf = tmp_path / "logrotate.conf"
    conf.write_text(rules.replace("/var/log/swarm/", f"{fake.log.parent}/").replace("su swarm swarm", me))
    done = subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "state"), str(conf)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rotated = fake.log.with_name(fake.log.name + ".1")
    assert rotated.read_text() == before and fake.log.read_text() == ""
    assert stat.S_IMODE(rotated.stat().st_mode) == stat.S_IMODE(fake.log.stat().st_mode) == 0o640
    assert fake.run().returncode == 0  # the next night writes on in the same file
    assert f"run {RUN} is done" in fake.log.read_text()
