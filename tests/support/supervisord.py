"""A real supervisord running a Swarm site's fleet from the config `swarm deploy supervisord` renders."""
from __future__ import annotations

import configparser
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
import xmlrpc.client
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from swarm.ledger import MessageState
from tests.support import ROOT
from tests.support.site import DATE, JOB, Site, log_tail
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent
GROUP = "swarm-worker"
RUN = f"{JOB}@date={DATE}"
UNIT = ROOT / "deploy" / "swarm-supervisord.service"
ME = pwd.getpwuid(os.getuid()).pw_name  # the service user here: supervisord can become no other


def unit_umask() -> int:
    """The ``UMask=`` of the shipped unit: supervisord applies its own umask only when it daemonizes."""
    [mask] = re.findall(r"^UMask=(\d+)$", UNIT.read_text(), re.MULTILINE)
    return int(mask, 8)


def assert_exact(site: Site, events: int, run_id: str = RUN) -> None:
    """The run is done, every message once, and the summary equals the single-process reference."""
    ledger = site.ledger()
    run = ledger.get_run(run_id)
    assert run.status == "done", run.error
    assert ledger.counters(run_id) == {"rows": events, "merchants": 40}
    assert set(ledger.counts(run_id)) == {MessageState.DONE}
    written, expected = site.exact()
    assert len(expected) == 40 and written == expected


class Supervisord:
    """supervisord in the foreground on a rendered config, as the shipped unit runs it.

    Its socket is in a short temp dir: a UNIX socket's path must stay short.
    """

    def __init__(self, site: Site, processes: int, autoscale: dict | None = None, env: dict | None = None):
        self.site = site
        self.dir = Path(tempfile.mkdtemp(prefix="swarm-sv-"))  # a UNIX socket path must stay short
        self.url = f"unix://{self.dir}/supervisor.sock"
        self.conf = site.tmp / "supervisord.conf"
        self.logs = site.tmp / "supervisor-logs"
        self.logs.mkdir(exist_ok=True)
        with site.config.open("a") as toml:
            toml.write(f'[autoscale]\nsupervisor_url = "{self.url}"\ngroup = "{GROUP}"\n'
                       + "".join(f"{k} = {v!r}\n" for k, v in (autoscale or {}).items()))
        self._render(processes, autoscale is not None, env or {})
        ctl = configparser.RawConfigParser(strict=False)
        ctl.read(self.conf)
        self.username, self.password = ctl["supervisorctl"]["username"], ctl["supervisorctl"]["password"]
        self.proc: subprocess.Popen | None = None

    def _render(self, processes: int, autoscale: bool, env: dict) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), SWARM_WORKER_JOB=JOB, SWARM_WORKER_DRAIN_SECONDS="60", **env)
        args = [sys.executable, "-m", "swarm.cli", "--config", str(self.site.config), "deploy", "supervisord",
                "--out", str(self.conf), "--processes", str(processes), "--log-dir", str(self.logs),
                "--run-dir", str(self.dir), "--user", ME, "--env", f"PYTHONPATH={ROOT}"]
        args += ["--autoscale"] if autoscale else []
        done = subprocess.run(args, cwd=self.site.tmp, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    # running --------------------------------------------------------------------------

    def start(self) -> None:
        out = open(self.logs / "supervisord.out", "wb")
        mask = unit_umask()
        self.proc = subprocess.Popen([str(BIN / "supervisord"), "--nodaemon", "-c", str(self.conf)],
                                     cwd=self.site.tmp, stdout=out, stderr=subprocess.STDOUT,
                                     preexec_fn=lambda: os.umask(mask))
        wait_until(self._answers, "supervisord to answer on its socket", timeout=30, every=0.1)

    def _answers(self) -> bool:
        assert self.proc.poll() is None, f"supervisord exited\n{self.log_tail()}"
        try:
            return self.rpc().getState()["statename"] == "RUNNING"
        except OSError:
            return False

    def rpc(self):
        """supervisord's ``supervisor`` XML-RPC namespace, over its UNIX socket."""
        transport = SupervisorTransport(self.username, self.password, self.url)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor

    def workers(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.rpc().getAllProcessInfo() if p["group"] == GROUP}

    def running(self) -> list[str]:
        return sorted(n for n, p in self.workers().items() if p["statename"] == "RUNNING")

    def by_pid(self, pid: int) -> str:
        [name] = [n for n, p in self.workers().items() if p["pid"] == pid]
        return name

    def stop(self) -> None:
        """Shut supervisord down (it stops its programs first); kill it if it will not go."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.rpc().shutdown()
            self.proc.wait(timeout=90)
        except (OSError, xmlrpc.client.Fault, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.logs, lines)
