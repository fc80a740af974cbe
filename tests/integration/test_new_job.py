"""A job from `swarm new-job`, unchanged, through `swarm master` and worker processes on the real services."""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from swarm.backends import open_tables
from swarm.scaffold import SAMPLE_DATE
from tests.support.rabbitmq import amqp_url
from tests.support.site import log_tail, write_key

NAME = "nj_daily"


def test_a_scaffolded_job_runs_unchanged_on_rabbitmq_mariadb_and_hbase_thrift(tmp_path, amqp_vhost, mysql_db,
                                                                              hbase_server):
    job_dir, logs = tmp_path / "job", tmp_path / "logs"
    logs.mkdir()
    swarm = Swarm(job_dir, logs)
    swarm.check("new-job", NAME, "--dir", str(job_dir))
    tables_url = hbase_server.url
    (job_dir / "swarm.toml").write_text(  # the scaffold's config, pointed at the real services
        f'[backends]\nbroker = "{amqp_url(amqp_vhost, heartbeat=5)}"\n'
        f'ledger = "mysql://root@127.0.0.1:3306/{mysql_db}"\ntables = "{tables_url}"\n'
        f'[security]\nkey_file = "{write_key(tmp_path / "site.key")}"\n'
        f'[jobs]\nmodules = ["{NAME}"]\npath = ["."]\n[master]\npoll = 0.2\n[options.{NAME}]\nchunks = 6\n')
    swarm.check("db", "init")
    swarm.check("tables", "create", NAME)
    swarm.check("tables", "load", f"{NAME}_events", f"{NAME}_sample.jsonl")
    workers = [swarm.start("worker", "--job", NAME) for _ in range(2)]
    try:
        master = swarm.start("master", NAME, "--date", SAMPLE_DATE)
        assert master.wait(timeout=240) == 0, log_tail(logs)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)
    sys.path.insert(0, str(job_dir))
    try:
        job = importlib.import_module(NAME)
        tables = open_tables(tables_url)
        written, expected = job.summary(tables, SAMPLE_DATE), job.reference(tables, SAMPLE_DATE)
        tables.close()
    finally:
        sys.path.remove(str(job_dir))
        sys.modules.pop(NAME, None)
    assert written == expected and len(expected) == 12


class Swarm:
    """The `swarm` command in the job's directory, as its author types it."""

    def __init__(self, cwd: Path, logs: Path):
        self.cwd, self.logs, self.n = cwd, logs, 0
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.bin = [sys.executable, "-m", "swarm.cli"]

    def check(self, *args: str) -> None:
        self.cwd.mkdir(exist_ok=True)
        done = subprocess.run([*self.bin, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"swarm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"

    def start(self, *args: str) -> subprocess.Popen:
        self.n += 1
        log = open(self.logs / f"{self.n:02d}-{args[0]}.log", "wb")
        return subprocess.Popen([*self.bin, *args], cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
