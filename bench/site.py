"""A bench site: a RabbitMQ vhost and a MariaDB database of its own, config files, and its processes.

Everything it creates is removed on exit, also when a case fails. The
services' helpers and the processes are the tests' (``tests.support``);
what is the bench's own is that the site makes its vhost and database
itself, writes a config per case, and runs any module from the repository
root (Celery, the probe), on embedded tables unless a case says otherwise.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import pymysql

from swarm.backends import open_ledger
from swarm.signing import SiteKeys, from_settings
from tests.support import ROOT
from tests.support.mysql import MYSQL, mysql_url, temporary_database
from tests.support.rabbitmq import amqp_url, temporary_vhost
from tests.support.site import Processes, config_text, write_key


class Site:
    """Use as a context manager; ``spawn`` processes, ``config`` files, and the URLs in ``urls``."""

    def __init__(self, keep_logs: Path | None = None):
        self.name = f"swarm-bench-{uuid.uuid4().hex[:8]}"
        self.database = self.name.replace("-", "_")
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.keep_logs = keep_logs
        self.amqp = amqp_url(self.name)
        self.urls = {
            "broker": self.amqp,
            "ledger": mysql_url(self.database),
            "tables": f"embedded:///{self.dir / 'tables.db'}",
        }
        self.processes = Processes(self.dir / "logs", cwd=ROOT)
        self.key_file = write_key(self.dir / "site.key")  # the site key every process of the bench signs with
        self._made = contextlib.ExitStack()

    def __enter__(self) -> "Site":
        with contextlib.ExitStack() as made:
            made.enter_context(temporary_vhost(self.name))
            made.enter_context(temporary_database(self.database))
            ledger = self.ledger()
            ledger.init_schema()
            ledger.close()
            self._made = made.pop_all()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop_all()
        try:
            self._made.close()  # the vhost and the database, each removed even if the other cannot be
        finally:
            if self.keep_logs is not None:
                shutil.copytree(self.processes.logs, self.keep_logs, dirs_exist_ok=True)
            shutil.rmtree(self.dir, ignore_errors=True)

    def ledger(self):
        return open_ledger(self.urls["ledger"])

    def keys(self) -> SiteKeys:
        return from_settings({"key_file": str(self.key_file)})

    def query(self, statement: str, args: Sequence[object] = ()) -> list[tuple]:
        """Rows from the site's ledger database, read directly (for timestamps the ledger API does not show)."""
        conn = pymysql.connect(**MYSQL, database=self.database, autocommit=True)
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
        sections: dict[str, Mapping[str, object]] = {
            "worker": {"lease": lease}, "master": {"poll": 0.2}, "log": {"level": "WARNING"}}
        sections.update({f"options.{job}": values for job, values in (options or {}).items()})
        path = self.dir / f"{name}.toml"
        path.write_text(config_text(urls, self.key_file, sections))
        return path

    def spawn(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.Popen:
        """Start ``python -m <args>`` from the repository root, output to a log of its own."""
        return self.processes.spawn(args, env, label=f"{args[0]}-{args[-1]}")

    def swarm(self, config: Path, *args: str, module: str = "swarm.cli",
              env: Mapping[str, str] | None = None) -> subprocess.Popen:
        return self.spawn([module, "--config", str(config), *args], env)

    def log_tail(self, proc: subprocess.Popen, lines: int = 30) -> str:
        return self.processes.log_tail(proc, lines)

    def stop(self, procs: Sequence[subprocess.Popen], timeout: float = 60.0) -> None:
        """SIGTERM (workers drain), then SIGKILL what is still there after ``timeout``."""
        self.processes.stop(procs, timeout)

    def stop_all(self) -> None:
        self.stop([p for p in self.processes.started if p.poll() is None], timeout=30)
