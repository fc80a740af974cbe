"""The bench's site: the tests' ``Site`` on a RabbitMQ vhost and a MariaDB database of its own.

Everything it creates is removed on exit, also when a case fails. What is
the bench's own is that it makes its vhost and database itself, writes a
config per case (``case_config``), runs processes from the repository root
(Celery, the probe), and uses embedded tables unless a case says otherwise.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from bench import amqp
from swarm.broker import stage_queue
from tests.support import ROOT
from tests.support.mysql import temporary_database
from tests.support.rabbitmq import amqp_url, temporary_vhost
from tests.support.site import Site


@contextlib.contextmanager
def bench_site(keep_logs: Path | None = None) -> Iterator[Site]:
    """A site with its schema made; its processes stopped, vhost and database dropped afterwards.

    ``keep_logs``: a folder its processes' logs are copied to before its own folder goes.
    """
    name = f"swarm-bench-{uuid.uuid4().hex[:8]}"
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        with temporary_vhost(name), temporary_database(name.replace("-", "_")) as database:
            site = Site(folder, name, database, broker=amqp_url(name), tables=f"embedded:///{folder / 'tables.db'}",
                        cwd=ROOT)
            ledger = site.ledger()
            ledger.init_schema()
            ledger.close()
            try:
                yield site
            finally:
                site.stop_all()
    finally:
        if keep_logs is not None and (folder / "logs").exists():
            shutil.copytree(folder / "logs", keep_logs, dirs_exist_ok=True)
        shutil.rmtree(folder, ignore_errors=True)


def case_config(site: Site, name: str, options: Mapping[str, Mapping[str, object]] | None = None,
                tables: str | None = None, lease: float = 60.0, master: Mapping[str, object] | None = None,
                jobs: Mapping[str, object] | None = None, level: str = "WARNING",
                split: Mapping[str, object] | None = None) -> Path:
    """A swarm.toml for one case; ``options`` by job name, ``master`` and ``jobs`` settings besides the bench's;
    ``split``: its ``[split]`` section, if any."""
    sections: dict[str, Mapping[str, object]] = {
        "worker": {"lease": lease}, "master": {"poll": 0.2, **(master or {})}, "log": {"level": level}}
    if jobs:
        sections["jobs"] = dict(jobs)
    if split:
        sections["split"] = split
    sections.update({f"options.{job}": values for job, values in (options or {}).items()})
    return site.config_file(name, sections, **({"tables": tables} if tables else {}))


def timed_master(site: Site, config: Path, job: str, stages: Sequence[str], date: str, procs: int, label: str,
                 before_stop: Callable[[list[subprocess.Popen]], Any] | None = None) -> tuple[float, Any]:
    """``procs`` workers consuming, then ``swarm master`` timed from its start to its exit; the seconds.

    ``before_stop(workers)``, called while they still run, gives the second value.
    """
    workers = [site.swarm(config, "worker", "--job", job) for _ in range(procs)]
    try:
        amqp.wait_consumers(site.amqp, [stage_queue(job, s) for s in stages], procs)
        started = time.monotonic()
        master = site.swarm(config, "master", job, "--date", date)
        code = master.wait(timeout=900)
        seconds = time.monotonic() - started
        extra = before_stop(workers) if before_stop else None
    finally:
        site.stop(workers)
    if code != 0:
        raise RuntimeError(f"the {label} master exited with {code}:\n{site.log_tail(master)}")
    return seconds, extra
