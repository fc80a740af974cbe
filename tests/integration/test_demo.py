"""`swarm demo` on the real services, with the workers as separate processes."""
import os
import subprocess
import sys

from tests.support import ROOT
from tests.support.rabbitmq import amqp_url


def test_demo_on_rabbitmq_mariadb_and_the_thrift_server(tmp_path, amqp_vhost, mysql_db, hbase_server):
    done = subprocess.run(
        [sys.executable, "-m", "swarm.cli", "demo", "--events", "5000", "--workers", "2",
         "--broker", amqp_url(amqp_vhost), "--ledger", f"mysql://root@127.0.0.1:3306/{mysql_db}",
         "--tables", hbase_server.url],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches the single-process reference" in done.stdout
    assert "guest:***@" in done.stdout and "guest:guest@" not in done.stdout + done.stderr
