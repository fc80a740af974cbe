"""A whole Swarm site on the real services: config, worker processes, a master process, faults."""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from swarm.backends import open_ledger, open_tables
from tests.integration.conftest import mysql_admin
from tests.integration.rabbitmq_support import amqp_url
from workers.jobs import merchant_daily as md

ROOT = Path(__file__).resolve().parents[2]
JOB = "merchant_slow"
DATE = "2026-11-22"


class Site:
    def __init__(self, tmp: Path, vhost: str, database: str, hbase, options: dict, lease: float = 3.0,
                 lost_after: float = 5.0, broker: str | None = None, ledger: str | None = None):
        """``broker``, ``ledger``: URLs of other accounts than guest on ``vhost`` and root on ``database``."""
        self.tmp, self.vhost, self.database, self.hbase = tmp, vhost, database, hbase
        self.urls = {
            "broker": broker or amqp_url(vhost, heartbeat=5),
            "ledger": ledger or f"mysql://root@127.0.0.1:3306/{database}",
            "tables": hbase.url,
        }
        self.key_file = write_key(tmp / "site.key")
        self.config = tmp / "swarm.toml"
        self.options, self.lease, self.lost_after = dict(options), lease, lost_after
        self.write_config()
        self.workers: list[subprocess.Popen] = []
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self._n = 0

    def write_config(self) -> None:
        """The site's config file, from its URLs, key file and ``options`` (change them, then call again)."""
        self.config.write_text(
            "[backends]\n" + "".join(f'{k} = "{v}"\n' for k, v in self.urls.items())
            + f'[security]\nkey_file = "{self.key_file}"\n'
            + '[jobs]\nmodules = ["tests.integration.slowjob"]\n'
            + f"[worker]\nlease = {self.lease}\n"
            + f"[master]\npoll = 0.2\nlost_after = {self.lost_after}\n"
            + f"[options.{JOB}]\n" + "".join(f"{k} = {v!r}\n" for k, v in self.options.items())
        )

    # data --------------------------------------------------------------------------

    def init_ledger(self, env: dict | None = None) -> None:
        done = self.cli("db", "init", env=env)
        assert done.returncode == 0, done.stderr

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a ``swarm`` command with the site's config to its end; ``env`` adds to the environment."""
        return subprocess.run([sys.executable, "-m", "swarm.cli", "--config", str(self.config), *args],
                              cwd=self.tmp, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                              capture_output=True, text=True, timeout=120)

    def generate(self, events: int) -> None:
        # On HBase, the test's tables pre-split as an operator would (HBase's Thrift API cannot).
        presplitting = getattr(self.hbase, "open_tables", None)
        tables = presplitting() if presplitting else open_tables(self.urls["tables"])
        md.create_tables(tables, DATE)
        md.generate(tables, DATE, events, merchants=40, customers=800)
        tables.close()

    def exact(self) -> tuple[dict, dict]:
        tables = open_tables(self.urls["tables"])
        try:
            return md.summary(tables, DATE), md.reference(tables, DATE)
        finally:
            tables.close()

    def ledger(self):
        return open_ledger(self.urls["ledger"])

    # processes -----------------------------------------------------------------------

    def _spawn(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        self._n += 1
        log = open(self.logs / f"{self._n:02d}-{args[0]}.log", "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
        return subprocess.Popen([sys.executable, "-m", "swarm.cli", "--config", str(self.config), *args],
                                cwd=self.tmp, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_worker(self, env: dict | None = None) -> subprocess.Popen:
        proc = self._spawn("worker", "--job", JOB, env=env)
        self.workers.append(proc)
        return proc

    def start_master(self, env: dict | None = None) -> subprocess.Popen:
        return self._spawn("master", JOB, "--date", DATE, env=env)

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.logs, lines)


def write_key(path: Path) -> Path:
    """A new site key in ``path``, mode 0600, as an operator makes one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def site_keys(site: "Site"):
    """The keys a site's processes sign with, for a test that publishes as the master would."""
    from swarm.signing import from_settings

    return from_settings({"key_file": str(site.key_file)})


def log_tail(folder: Path, lines: int = 40) -> str:
    """The last lines of every log in ``folder``, for a failing assertion's message."""
    out = []
    for path in sorted(folder.iterdir()):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


def kill_mysql_sessions(database: str) -> int:
    """Kill every connection using ``database``, as a failover or a network cut would."""
    conn = mysql_admin()
    killed = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                        (database,))
            for (pid,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(pid)}")
                    killed += 1
                except Exception:  # noqa: BLE001 - it may have gone by itself
                    pass
    finally:
        conn.close()
    return killed


def wait_until(condition, what: str, timeout: float = 120.0, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(every)
