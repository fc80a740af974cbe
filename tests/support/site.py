"""A whole Swarm site on the real services: config, worker processes, a master process, their logs.

The integration and fault tests run the slowed nightly job on it; the bench
(``bench.site``) runs its cases on one too.
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import pymysql

from swarm.backends import open_ledger, open_tables
from swarm.signing import SiteKeys, from_settings
from tests.support import ROOT
from tests.support.mysql import MYSQL, mysql_url
from tests.support.rabbitmq import amqp_url
from workers.jobs import merchant_daily as md

JOB = "merchant_slow"  # tests.support.slowjob
DATE = "2026-11-22"


def write_key(path: Path) -> Path:
    """A new site key in ``path``, mode 0600, as an operator makes one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def config_text(urls: Mapping[str, str], key_file: Path, sections: Mapping[str, Mapping[str, object]]) -> str:
    """A swarm.toml: the backends, the site key, then each of ``sections`` (values as literals, bools as TOML)."""
    text = "[backends]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items())
    text += f'[security]\nkey_file = "{key_file}"\n'
    for name, values in sections.items():
        text += f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
    return text


def _toml(value: object) -> str:
    """A value as TOML writes it: Python's literal, but for booleans."""
    return str(value).lower() if isinstance(value, bool) else repr(value)


def log_tail(folder: Path, lines: int = 40) -> str:
    """The last lines of every log in ``folder``, for a failing assertion's message."""
    out = []
    for path in sorted(folder.iterdir()):
        text = path.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {path.name}\n" + "\n".join(text))
    return "\n".join(out)


class Site:
    """Swarm on a vhost, a database and a table store: a site key, config files, and ``python -m`` processes.

    Made for a test by ``make_site`` (the slowed nightly job, ``tests.support.slowjob``,
    on an HBase dev server: ``config``, ``start_worker``, ``start_master``), and for
    the bench by ``bench.site.bench_site`` (a config per case by ``config_file``,
    any module by ``spawn``). Each process logs to a numbered file in ``logs``.
    """

    def __init__(self, tmp: Path, vhost: str, database: str, hbase=None, options: dict | None = None,
                 lease: float = 3.0, lost_after: float = 5.0, broker: str | None = None, ledger: str | None = None,
                 tables: str | None = None, cwd: Path | None = None, split: Mapping[str, object] | None = None,
                 max_queue: int = 0):
        """``broker``, ``ledger``: URLs of other accounts than guest on ``vhost`` and root on ``database``.

        ``tables``: the table store's URL, if not ``hbase``'s; ``cwd``: where processes start (else ``tmp``);
        ``split``: the config's ``[split]`` section (straggler splitting), when given; ``max_queue``: the
        bound of every stage queue (``jobs.max_queue``), 0 for none.
        """
        self.tmp, self.vhost, self.database, self.hbase = tmp, vhost, database, hbase
        self.urls = {
            "broker": broker or amqp_url(vhost, heartbeat=5),
            "ledger": ledger or mysql_url(database),
            "tables": tables or hbase.url,
        }
        self.key_file = write_key(tmp / "site.key")
        self.config = tmp / "swarm.toml"
        self.options, self.lease, self.lost_after = dict(options or {}), lease, lost_after
        self.split = dict(split or {})
        self.max_queue = max_queue
        self.write_config()
        self.workers: list[subprocess.Popen] = []
        self.started: list[subprocess.Popen] = []
        self.logs = tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.cwd = cwd or tmp
        self._log_of: dict[int, Path] = {}  # by pid

    @property
    def amqp(self) -> str:
        """The broker's URL."""
        return self.urls["broker"]

    def write_config(self, name: str | None = None, **urls: str) -> Path:
        """The site's config file, from its URLs, key file and ``options`` (change them, then call again).

        ``name`` and ``urls``: another file, with some backends elsewhere (e.g. the ledger behind a fault proxy).
        """
        return self.config_file(name or self.config.stem, {
            "jobs": {"modules": ["tests.support.slowjob"], **({"max_queue": self.max_queue} if self.max_queue else {})},
            "worker": {"lease": self.lease},
            "master": {"poll": 0.2, "lost_after": self.lost_after},
            **({"split": self.split} if self.split else {}),
            f"options.{JOB}": self.options,
        }, **urls)

    def config_file(self, name: str, sections: Mapping[str, Mapping[str, object]], **urls: str) -> Path:
        """``<name>.toml`` in the site's folder: its backends (``urls`` in place of some), key, ``sections``."""
        path = self.tmp / f"{name}.toml"
        path.write_text(config_text({**self.urls, **urls}, self.key_file, sections))
        return path

    def keys(self) -> SiteKeys:
        """The keys the site's processes sign with, for a caller that publishes as the master would."""
        return from_settings({"key_file": str(self.key_file)})

    # data --------------------------------------------------------------------------

    def init_ledger(self, env: dict | None = None) -> None:
        done = self.cli("db", "init", env=env)
        assert done.returncode == 0, done.stderr

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run a ``swarm`` command with the site's config to its end; ``env`` adds to the environment."""
        return subprocess.run([sys.executable, "-m", "swarm.cli", "--config", str(self.config), *args],
                              cwd=self.tmp, env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})),
                              capture_output=True, text=True, timeout=120)

    def generate(self, events: int, hot: float = 0.0) -> None:
        """``events`` of the day; ``hot``: the share of them in one chunk's range, a skewed day (``md.generate``)."""
        # On HBase, the test's tables pre-split as an operator would (HBase's Thrift API cannot).
        presplitting = getattr(self.hbase, "open_tables", None)
        tables = presplitting() if presplitting else open_tables(self.urls["tables"])
        md.create_tables(tables, DATE)
        md.generate(tables, DATE, events, merchants=40, customers=800, hot=hot)
        tables.close()

    def exact(self) -> tuple[dict, dict]:
        tables = open_tables(self.urls["tables"])
        try:
            return md.summary(tables, DATE), md.reference(tables, DATE)
        finally:
            tables.close()

    def ledger(self):
        return open_ledger(self.urls["ledger"])

    def query(self, statement: str, args: Sequence[object] = ()) -> list[tuple]:
        """Rows from the site's ledger database, read directly (for timestamps the ledger API does not show)."""
        conn = pymysql.connect(**MYSQL, database=self.database, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(statement, tuple(args))
                return list(cur.fetchall())
        finally:
            conn.close()

    # processes -----------------------------------------------------------------------

    def spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None,
              label: str | None = None, wrap: Sequence[str] = ()) -> subprocess.Popen:
        """Start ``python -m <args>`` with the repository importable; ``env`` adds to the environment.

        Its log is numbered in start order and named by ``label`` (else by the module and the last argument).
        ``wrap``: a command that runs it, e.g. on a test host (``Host.command``); it must exec, not fork.
        """
        path = self.logs / f"{len(self.started) + 1:02d}-{label or f'{args[0]}-{args[-1]}'}.log"
        with open(path, "wb") as log:
            env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
            proc = subprocess.Popen([*wrap, sys.executable, "-m", *args], cwd=self.cwd, stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
        self.started.append(proc)
        self._log_of[proc.pid] = path
        return proc

    def swarm(self, config: Path, *args: str, module: str = "swarm.cli",
              env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """``swarm --config config args...``, or another module's command line in its place."""
        return self.spawn([module, "--config", str(config), *args], env)

    def _spawn(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return self.spawn(["swarm.cli", "--config", str(self.config), *args], env, label=args[0])

    def start_worker(self, env: dict | None = None) -> subprocess.Popen:
        proc = self._spawn("worker", "--job", JOB, env=env)
        self.workers.append(proc)
        return proc

    def start_master(self, env: dict | None = None) -> subprocess.Popen:
        return self._spawn("master", JOB, "--date", DATE, env=env)

    def stop(self, procs: Sequence[subprocess.Popen] | None = None, timeout: float = 60.0) -> None:
        """SIGTERM (a worker drains), then SIGKILL what is still there after ``timeout``; the workers by default."""
        procs = self.workers if procs is None else procs
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

    def stop_all(self, timeout: float = 30.0) -> None:
        """Stop every process the site started that still runs."""
        self.stop([p for p in self.started if p.poll() is None], timeout)

    def log_of(self, proc: subprocess.Popen) -> Path:
        """The file ``proc`` logs to."""
        return self._log_of[proc.pid]

    def log_tail(self, proc: subprocess.Popen | None = None, lines: int = 40) -> str:
        """The last lines ``proc`` wrote, or of every log when no ``proc`` is named."""
        if proc is None:
            return log_tail(self.logs, lines)
        text = self._log_of[proc.pid].read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])
