"""`swarm config check` on RabbitMQ, MariaDB and the HBase Thrift dev server."""
from __future__ import annotations

from swarm.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main
from swarm.ledgers.sql import SCHEMA_VERSION
from tests.support.rabbitmq import amqp_url, queue_types


def test_the_check_reads_each_backend_and_changes_nothing(tmp_path, amqp_vhost, mysql_db, hbase_server, capsys,
                                                           monkeypatch):
    path = tmp_path / "swarm.toml"
    path.write_text(f'[backends]\nbroker = "{amqp_url(amqp_vhost)}"\n'
                    f'ledger = "mysql://root@127.0.0.1:3306/{mysql_db}"\ntables = "{hbase_server.url}"\n')
    monkeypatch.setenv("SWARM_SECURITY_KEY", "k" * 40)
    assert main(["--config", str(path), "config", "check"]) == EXIT_USAGE  # no schema yet
    out = capsys.readouterr().out
    assert "connected to RabbitMQ" in out
    assert f"mysql://root@127.0.0.1:3306/{mysql_db} holds no Swarm schema: `swarm db init`" in out
    assert f"{hbase_server.url}: 0 table(s)" in out

    assert main(["--config", str(path), "db", "init"]) == EXIT_OK
    assert main(["--config", str(path), "config", "check"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"schema version {SCHEMA_VERSION}, this Swarm's" in out and out.endswith("all well\n")
    assert queue_types(amqp_vhost) == {}  # nothing was declared


def test_a_refused_login_is_a_config_problem_and_a_closed_port_is_exit_75(tmp_path, amqp_vhost, mysql_db, capsys,
                                                                           monkeypatch):
    monkeypatch.setenv("SWARM_SECURITY_KEY", "k" * 40)
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", amqp_url(amqp_vhost, password="Wr0ng-pa55"))
    monkeypatch.setenv("SWARM_BACKENDS_LEDGER", f"mysql://root@127.0.0.1:1/{mysql_db}")
    monkeypatch.setenv("SWARM_BACKENDS_TABLES", f"embedded:///{tmp_path}/t.db")
    (tmp_path / "t.db").touch()
    assert main(["config", "check", "--timeout", "5"]) == EXIT_USAGE  # the refusal: waiting will not fix it
    captured = capsys.readouterr()
    assert "login refused" in captured.out and "Can't connect to MySQL server" in captured.out
    assert "Wr0ng-pa55" not in captured.out + captured.err
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", amqp_url(amqp_vhost))
    assert main(["config", "check", "--timeout", "5"]) == EXIT_UNAVAILABLE  # only the closed port left
