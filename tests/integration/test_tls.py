"""TLS to RabbitMQ and MariaDB, on servers of the tests' own that accept nothing else.

The shared services stay as they are: each server here runs from the Debian
packages in a temporary folder (see ``tests.support.tls``), with a throwaway CA,
a server certificate for 127.0.0.1 and localhost, and a client certificate
that both servers require.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pymysql
import pytest

from swarm import config
from swarm.backends import open_broker, open_ledger
from swarm.brokers.rabbitmq import RabbitBroker
from swarm.errors import BackendError
from swarm.ledger import MessageState
from swarm.ledgers.mysql import MysqlLedger
from tests.support import ROOT
from tests.support.contracts.broker import Recorder, serving
from tests.support.contracts.ledger import LEASE, PHASE, RUN, known, message
from tests.support.pki import Pki, make_pki
from tests.support.tls import MariaServer, RabbitNode, running
from tests.support.waiting import wait_until


@pytest.fixture(scope="session")
def tls_dir():
    # Not pytest's tmp_path: its folders are 0700, and the mysql user must reach the files it is given.
    folder = Path(tempfile.mkdtemp(prefix="swarm-tls-"))
    folder.chmod(0o711)  # others may open a file they are told of, and list nothing
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pki(tls_dir) -> Pki:
    return make_pki(tls_dir / "pki")


@pytest.fixture(scope="session")
def rabbit_tls(tls_dir, pki):
    with running(RabbitNode(tls_dir / "rabbitmq", pki)) as node:
        yield node


@pytest.fixture(scope="session")
def mysql_tls(tls_dir, pki):
    with running(MariaServer(tls_dir / "mariadb", pki)) as server:
        yield server


def client_options(pki: Pki, ca: Path | None = None) -> dict[str, Path]:
    return {"ssl_ca": ca or pki.ca, "ssl_cert": pki.client_cert, "ssl_key": pki.client_key}


def run_env() -> dict[str, str]:
    """The environment of every process a whole run starts (the demo and its workers).

    A site's settings that processes read from the environment, a signing key say, go here.
    """
    return dict(os.environ, PYTHONPATH=str(ROOT))


def one_line_without(error: BaseException, secret: str) -> str:
    text = str(error)
    assert "\n" not in text and secret not in text, text
    return text


# -- RabbitMQ ----------------------------------------------------------------------------------


def test_broker_over_amqps_publishes_and_consumes_with_confirms(rabbit_tls, pki):
    queue = f"tls.{uuid.uuid4().hex[:8]}"
    broker = RabbitBroker(rabbit_tls.url(**client_options(pki)))
    try:
        broker.declare([queue])
        broker.publish([(queue, b"one"), (queue, b"two")])  # returns once the broker has confirmed both
        assert broker.depth(queue) == 2
        got = Recorder(settle=lambda delivery: delivery.ack())
        broker.consume(queue, 10, got)
        with serving(broker):
            wait_until(lambda: len(got) == 2, "both messages over TLS")
        assert sorted(got.bodies) == [b"one", b"two"]
        assert broker.depth(queue) == 0
    finally:
        broker.close()


@pytest.mark.parametrize("options, says", [
    (lambda pki: client_options(pki, ca=pki.other_ca), "self-signed certificate in certificate chain"),
    (lambda pki: client_options(pki) | {"ssl_server_name": "mq.example.com"}, "Hostname mismatch"),
], ids=["wrong CA", "wrong name"])
def test_a_certificate_that_does_not_verify_is_one_clear_error(rabbit_tls, pki, options, says):
    text = connect_error(rabbit_tls, rabbit_tls.url(**options(pki)))
    assert "cannot connect: TLS verification failed" in text and says in text, text
    assert f"{rabbit_tls.user}:***@" in text


def test_the_name_checked_is_the_urls_host_or_ssl_server_name(rabbit_tls, pki):
    for url in (rabbit_tls.url(host="localhost", **client_options(pki)),
                rabbit_tls.url(ssl_server_name="localhost", **client_options(pki))):
        broker = RabbitBroker(url)
        try:
            broker.declare([f"tls.{uuid.uuid4().hex[:8]}"])  # connects: the certificate names both
        finally:
            broker.close()


def connect_error(node, url: str) -> str:
    """The one line a failed connection to ``url`` gives, checked to carry no password."""
    broker = RabbitBroker(url)
    try:
        with pytest.raises(BackendError) as err:
            broker.declare(["tls.never"])
    finally:
        broker.close()
    return one_line_without(err.value, node.password)


def test_the_node_requires_a_client_certificate(rabbit_tls, pki):
    text = connect_error(rabbit_tls, rabbit_tls.url(ssl_ca=pki.ca))
    # the server's alert, or its closing the connection first when the alert loses the race
    assert "cannot connect: TLS handshake failed: the server " in text and "client certificate" in text, text


# -- MariaDB -----------------------------------------------------------------------------------


def ssl_cipher(conn: pymysql.connections.Connection) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW STATUS LIKE 'Ssl_cipher'")
        return cur.fetchone()[1]


def test_ledger_over_tls_inits_claims_completes_and_locks(mysql_tls, pki):
    ledger = MysqlLedger(mysql_tls.url(**client_options(pki)))
    try:
        ledger.init_schema()  # under the schema lock, a connection of its own
        first, child = known(ledger, message(1)), message("1.0", stage="write")
        claim = ledger.claim(RUN, PHASE, first, "w1", LEASE)
        assert claim.granted
        ledger.complete(first.id, claim.token, RUN, PHASE, [child], {"rows": 2})
        assert ledger.counts(RUN, PHASE) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
        assert ledger.counters(RUN) == {"rows": 2}
        ledger.lock_master("tls-key", "tls test")
        # The server's own word that the sessions are encrypted: this thread's and the master lock's.
        assert ssl_cipher(ledger._connection())
        assert ssl_cipher(ledger._masters["tls-key"].conn)
        ledger.unlock_master("tls-key")
    finally:
        ledger.close()


@pytest.mark.parametrize("options, says", [
    (lambda pki: {}, "Access denied"),  # no client certificate: REQUIRE X509 refuses the login
    (lambda pki: {"ssl_ca": pki.ca}, "Access denied"),
    (lambda pki: client_options(pki, ca=pki.other_ca), "TLS verification failed"),
], ids=["no TLS options", "no client certificate", "wrong CA"])
def test_the_server_refuses_a_session_without_the_right_tls(mysql_tls, pki, options, says):
    ledger = MysqlLedger(mysql_tls.url(**options(pki)))
    try:
        with pytest.raises(BackendError) as err:
            ledger.init_schema()
    finally:
        ledger.close()
    text = one_line_without(err.value, mysql_tls.password)
    assert says in text and "gave up after" not in text, text  # refused at once: no retrying


# -- passwords from files, and a whole run --------------------------------------------------------


def test_passwords_from_files_reach_both_servers(tmp_path, rabbit_tls, mysql_tls, pki):
    for role, password in (("broker", rabbit_tls.password), ("ledger", mysql_tls.password)):
        (tmp_path / f"{role}.password").write_text(password + "\n")
    urls = {"broker": rabbit_tls.url(password="", **client_options(pki)),
            "ledger": mysql_tls.url(password="", **client_options(pki))}
    path = tmp_path / "swarm.toml"
    path.write_text("[backends]\n" + "".join(
        f"{role} = {json.dumps(url)}\n{role}_password_file = {json.dumps(str(tmp_path / f'{role}.password'))}\n"
        for role, url in urls.items()))
    cfg = config.load(str(path), env={})
    shown = json.dumps(cfg.describe())
    assert rabbit_tls.password not in shown and mysql_tls.password not in shown
    queue = f"tls.{uuid.uuid4().hex[:8]}"
    broker, ledger = open_broker(cfg["backends"]["broker"]), open_ledger(cfg["backends"]["ledger"])
    try:
        broker.declare([queue])
        assert broker.depth(queue) == 0
        ledger.init_schema()
        assert ledger.counts("no-such-run") == {}
    finally:
        broker.close()
        ledger.close()


def test_the_demo_runs_whole_over_tls(tmp_path, rabbit_tls, mysql_tls, pki, hbase_server):
    broker = rabbit_tls.url(**client_options(pki), heartbeat=5)
    ledger = mysql_tls.url(**client_options(pki))
    done = subprocess.run(
        [sys.executable, "-m", "swarm.cli", "demo", "--events", "5000", "--workers", "2",
         "--broker", broker, "--ledger", ledger, "--tables", hbase_server.url],
        cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    said = " ".join(done.stdout.split())  # as printed, wrapped to the terminal's width
    assert " done in " in said and "matches the single-process reference" in said, output
    assert rabbit_tls.password not in output and mysql_tls.password not in output
