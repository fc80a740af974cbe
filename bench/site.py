"""A bench site: a RabbitMQ vhost and a MariaDB database of its own, config files, and its processes.

Everything it creates is removed on exit, also when a case fails.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import pymysql

from bench import amqp
from swarm.backends import open_ledger
from swarm.signing import SiteKeys, from_settings

ROOT = Path(__file__).resolve().parents[1]
MYSQL = dict(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=10, autocommit=True)


def rabbitmqctl(*args: str, patience: float = 90.0) -> str:
    """Run ``rabbitmqctl``; waits out a broker that is being restarted (other tests on the machine do)."""
    deadline = time.monotonic() + patience
    while True:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout
        said = done.stderr.strip() or done.stdout.strip()
        restarting = "start_app" in said or "nodedown" in said or "unable to perform an operation" in said
        if not restarting or time.monotonic() > deadline:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {said.splitlines()[0] if said else done.returncode}")
        time.sleep(2)


def mysql(statement: str) -> None:
    conn = pymysql.connect(**MYSQL)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


class Site:
    """Use as a context manager; ``spawn`` processes, ``config`` files, and the URLs in ``urls``."""

    def __init__(self, keep_logs: Path | None = None):
        self.name = f"swarm-bench-{uuid.uuid4().hex[:8]}"
        self.database = self.name.replace("-", "_")
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.keep_logs = keep_logs
        self.amqp = amqp.amqp_url(self.name)
        self.urls = {
            "broker": self.amqp,
            "ledger": f"mysql://root@127.0.0.1:3306/{self.database}",
            "tables": f"embedded:///{self.dir / 'tables.db'}",
        }
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}  # by pid
        self.key_file = self.dir / "site.key"  # the site key every process of the bench signs with
        fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))

    def __enter__(self) -> "Site":
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, "guest", ".*", ".*", ".*")
        mysql(f"CREATE DATABASE `{self.database}`")
        ledger = self.ledger()
        ledger.init_schema()
        ledger.close()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop_all()
        errors = []
        for undo in (lambda: rabbitmqctl("delete_vhost", self.name),
                     lambda: mysql(f"DROP DATABASE IF EXISTS `{self.database}`")):
            try:
                undo()
            except Exception as exc:  # noqa: BLE001 - clean up the rest, then report
                errors.append(exc)
        if self.keep_logs is not None:
            shutil.copytree(self.dir / "logs", self.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise errors[0]

    def ledger(self):
        return open_ledger(self.urls["ledger"])

    def keys(self) -> SiteKeys:
        return from_settings({"key_file": str(self.key_file)})

    def query(self, statement: str, args: Sequence[object] = ()) -> list[tuple]:
        """Rows from the site's ledger database, read directly (for timestamps the ledger API does not show)."""
        conn = pymysql.connect(**MYSQL, database=self.database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, tuple(args))
                return list(cur.fetchall())
        finally:
            conn.close()

    def config(self, name: str, options: Mapping[str, Mapping[str, object]] | None = None,
               tables: str | None = None, lease: float = 60.0) -> Path:
        """A swarm.toml for one case; ``options`` by job name."""
        urls = dict(self.urls, tables=tables or self.urls["tables"])
        text = "[backends]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items())
        text += f'[security]\nkey_file = "{self.key_file}"\n'
        text += f"[worker]\nlease = {lease}\n[master]\npoll = 0.2\n[log]\nlevel = \"WARNING\"\n"
        for job, values in (options or {}).items():
            text += f"[options.{job}]\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items())
        path = self.dir / f"{name}.toml"
        path.write_text(text)
        return path

    def spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start ``python -m <args>`` from the repository root, output to a log of its own."""
        logs = self.dir / "logs"
        logs.mkdir(exist_ok=True)
        path = logs / f"{len(self.procs) + 1:02d}-{args[0]}-{args[-1]}.log"
        with open(path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        self.procs.append(proc)
        self.logs[proc.pid] = path
        return proc

    def swarm(self, config: Path, *args: str, module: str = "swarm.cli",
              env: Mapping[str, str] | None = None) -> subprocess.Popen:
        return self.spawn([module, "--config", str(config), *args], env)

    def log_tail(self, proc: subprocess.Popen, lines: int = 30) -> str:
        text = self.logs[proc.pid].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, procs: Sequence[subprocess.Popen], timeout: float = 60.0) -> None:
        """SIGTERM (workers drain), then SIGKILL what is still there after ``timeout``."""
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop_all(self) -> None:
        self.stop([p for p in self.procs if p.poll() is None], timeout=30)


def wait_until(condition, what: str, timeout: float, every: float = 0.05) -> float:
    """Wait for ``condition()``; returns the monotonic time it was seen true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)
    return time.monotonic()
