"""A worker's /readyz on the real services: 503 naming the ledger while MariaDB is out of reach, then 200 again."""
from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.support.net import free_port
from tests.support.rabbitmq import FaultProxy
from tests.support.site import Site
from tests.support.waiting import wait_until


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:  # not listening yet
        return 0, str(err)


@pytest.fixture
def ledger_proxy():
    proxy = FaultProxy(target=("127.0.0.1", 3306))
    yield proxy
    proxy.close()


def test_readyz_turns_503_while_the_ledger_is_unreachable_and_back(tmp_path, amqp_vhost, mysql_db, hbase_server,
                                                                   ledger_proxy):
    site = Site(tmp_path, amqp_vhost, mysql_db, hbase_server, options={},
                ledger=f"mysql://root@127.0.0.1:{ledger_proxy.port}/{mysql_db}")
    site.init_ledger()
    port = free_port()
    site.start_worker(env={"SWARM_WORKER_METRICS_PORT": str(port)})
    try:
        wait_until(lambda: get(port, "/readyz")[0] == 200, "the worker to be ready", timeout=60, every=0.1)

        ledger_proxy.refusing = True
        ledger_proxy.cut()
        wait_until(lambda: get(port, "/readyz")[0] == 503, "/readyz to say the ledger is down", timeout=60, every=0.1)
        status, body = get(port, "/readyz")
        lines = dict(line.split(": ", 1) for line in body.splitlines())
        assert (lines["broker"], lines["tables"]) == ("ok", "ok") and lines["ledger"] != "ok", body
        assert get(port, "/healthz")[0] == 200  # the process is alive all the same
        assert "swarm_messages_total" in get(port, "/metrics")[1]

        ledger_proxy.refusing = False
        wait_until(lambda: get(port, "/readyz")[0] == 200, "the worker to be ready again", timeout=60, every=0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{site.log_tail()}") from None
    finally:
        site.stop()
