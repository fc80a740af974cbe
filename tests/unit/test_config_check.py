"""`swarm config check`: the settings and where each came from, then one line per backend."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from swarm import check
from swarm.backends import open_ledger, open_tables
from swarm.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main
from swarm.ledgers.sql import SCHEMA_VERSION

PASSWORD = "Zt8-kQ3-vX9"  # never to be printed
KEY = "k" * 40


def config(tmp_path, text: str = "") -> str:
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    return str(path)


def embedded(tmp_path, ledger: bool = True, tables: bool = True) -> str:
    """A config on an embedded ledger and table store, made (or not) as `swarm db init` and `tables create` would."""
    urls = {"ledger": f"sqlite:///{tmp_path}/l.db", "tables": f"embedded:///{tmp_path}/t.db"}
    if ledger:
        open_ledger(urls["ledger"]).close()
    if tables:
        store = open_tables(urls["tables"])
        store.create_table("events", ["e"])
        store.close()
    return config(tmp_path, "[backends]\n" + "".join(f'{k} = "{v}"\n' for k, v in urls.items()))


def lines(out: str) -> dict[str, str]:
    """The backend lines, by role."""
    found = {}
    for line in out.splitlines():
        for role in ("broker", "ledger", "tables", "site key"):
            if line.startswith(f"{role} ") and line[len(role):].split()[0] in (check.OK, check.PROBLEM,
                                                                              check.UNREACHABLE):
                found[role] = line[len(role):].strip()
    return found


def test_all_well_is_exit_0_with_each_setting_and_where_it_came_from(tmp_path, capsys, monkeypatch):
    path = embedded(tmp_path)
    with open(path, "a") as f:
        f.write("[worker]\nlease = 30\n[options.merchant_daily]\nchunks = 64\n")
    monkeypatch.setenv("SWARM_MASTER_POLL", "0.5")
    assert main(["--config", path, "config", "check"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.startswith(f"config: {path}\n")
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith("  ")}
    assert rows["worker.lease"] == ["30.0", "file"]
    assert rows["master.poll"] == ["0.5", "SWARM_MASTER_POLL"]
    assert rows["worker.processes"] == ["2", "default"]
    assert rows["options.merchant_daily.chunks"] == ["64", "file"]
    found = lines(out)
    assert found["broker"].startswith("OK") and "in-process (memory://): fine for `swarm run`, not for a fleet" \
        in found["broker"]
    assert found["ledger"] == f"OK           {tmp_path}/l.db: schema version {SCHEMA_VERSION}, this Swarm's"
    assert found["tables"] == f"OK           embedded:///{tmp_path}/t.db: 1 table(s): events"
    assert out.endswith("all well\n")


def test_secrets_are_masked_in_every_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWARM_SECURITY_KEY", KEY)
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", f"amqp://swarm:{PASSWORD}@127.0.0.1:1/%2F")
    monkeypatch.setenv("SWARM_AUTOSCALE_SUPERVISOR_URL", f"http://ops:{PASSWORD}@127.0.0.1:9001")
    path = embedded(tmp_path)
    assert main(["--config", path, "config", "check", "--timeout", "5"]) == EXIT_UNAVAILABLE
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err and KEY[:8] not in captured.out + captured.err
    rows = {line.split()[0]: line.split()[1:] for line in captured.out.splitlines() if line.startswith("  ")}
    assert rows["backends.broker"] == ['"amqp://swarm:***@127.0.0.1:1/%2F"', "SWARM_BACKENDS_BROKER"]
    assert rows["autoscale.supervisor_url"][0] == '"http://ops:***@127.0.0.1:9001"'
    assert rows["security.key"] == ['"***"', "SWARM_SECURITY_KEY"]


def test_a_broker_that_does_not_answer_is_exit_75_with_the_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWARM_SECURITY_KEY", KEY)
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", f"amqp://swarm:{PASSWORD}@127.0.0.1:1/%2F")  # nothing listens
    assert main(["--config", embedded(tmp_path), "config", "check"]) == EXIT_UNAVAILABLE
    out = capsys.readouterr().out
    found = lines(out)
    assert found["broker"].startswith("UNREACHABLE") and "cannot connect" in found["broker"]
    assert found["ledger"].startswith("OK") and found["site key"].startswith("OK  ")
    assert out.endswith("a backend did not answer (exit 75)\n")


def test_a_probe_that_hangs_is_given_up_at_the_timeout(tmp_path, capsys, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(check, "check_tables", lambda url, timeout: release.wait(60) and "late")
    try:
        assert main(["--config", embedded(tmp_path), "config", "check", "--timeout", "0.2"]) == EXIT_UNAVAILABLE
    finally:
        release.set()
    found = lines(capsys.readouterr().out)
    assert found["tables"] == "UNREACHABLE  no answer within 0.2 s"
    assert found["ledger"].startswith("OK")


def test_no_ledger_and_no_tables_yet_are_config_problems(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "check"]) == EXIT_USAGE
    out = capsys.readouterr().out
    assert out.startswith(f"config: no config file (no --config, and no swarm.toml in {tmp_path})")
    found = lines(out)
    assert found["ledger"] == (f"PROBLEM      no ledger found at {tmp_path}/swarm.db: `swarm db init` creates it "
                               f"(`swarm run` and `swarm master` create a SQLite ledger themselves)")
    assert found["tables"].startswith(f"PROBLEM      no table store at {tmp_path}/swarm-tables.db yet")
    assert list(tmp_path.iterdir()) == []  # the check made nothing


def test_a_ledger_file_without_the_schema_is_named(tmp_path, capsys):
    path = embedded(tmp_path, ledger=False)
    sqlite3.connect(tmp_path / "l.db").close()
    assert main(["--config", path, "config", "check"]) == EXIT_USAGE
    assert lines(capsys.readouterr().out)["ledger"] == (
        f"PROBLEM      {tmp_path}/l.db holds no Swarm schema: `swarm db init` (as the ledger's admin user) creates it")


def test_an_older_schema_is_reported_and_left_as_it_is(tmp_path, capsys):
    path = embedded(tmp_path)
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE swarm_schema SET version = 1")
    assert main(["--config", path, "config", "check"]) == EXIT_USAGE
    assert lines(capsys.readouterr().out)["ledger"] == (
        f"PROBLEM      {tmp_path}/l.db: schema version 1, older than this Swarm's {SCHEMA_VERSION}: "
        f"run `swarm db migrate` as the ledger's admin user")
    with sqlite3.connect(tmp_path / "l.db") as db:
        assert db.execute("SELECT version FROM swarm_schema").fetchone() == (1,)  # not migrated by the check


def test_a_newer_schema_asks_for_a_newer_swarm(tmp_path, capsys):
    path = embedded(tmp_path)
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("UPDATE swarm_schema SET version = ?", (SCHEMA_VERSION + 1,))
    assert main(["--config", path, "config", "check"]) == EXIT_USAGE
    assert "newer than this Swarm's" in lines(capsys.readouterr().out)["ledger"]


def test_a_backend_url_its_client_refuses_is_a_config_problem(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWARM_BACKENDS_LEDGER", "mysql://swarm@db1:3306/swarm?pool=3")
    assert main(["--config", embedded(tmp_path), "config", "check"]) == EXIT_USAGE
    assert lines(capsys.readouterr().out)["ledger"].startswith("PROBLEM      ledger: unknown option pool")


def test_a_shared_broker_without_a_site_key_is_a_config_problem_even_when_unreachable(tmp_path, capsys,
                                                                                       monkeypatch):
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", f"amqp://swarm:{PASSWORD}@127.0.0.1:1/%2F")
    assert main(["--config", embedded(tmp_path), "config", "check"]) == EXIT_USAGE
    found = lines(capsys.readouterr().out)
    assert found["site key"].startswith("PROBLEM      security.key_file: a shared broker needs the site key")
    assert found["broker"].startswith("UNREACHABLE")


def test_a_password_that_is_not_encoded_stops_the_check_saying_how(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SWARM_BACKENDS_BROKER", "amqp://swarm:Zt8@kQ3/vX9@mq1/%2F")
    assert main(["--config", embedded(tmp_path), "config", "check"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "urllib.parse.quote(password, safe='')" in captured.err
    assert not [part for part in ("Zt8", "kQ3", "vX9") if part in captured.out + captured.err]


@pytest.mark.parametrize("timeout", ["0", "-1"])
def test_the_timeout_must_be_positive(tmp_path, capsys, timeout):
    assert main(["--config", embedded(tmp_path), "config", "check", "--timeout", timeout]) == EXIT_USAGE
    assert "--timeout must be more than 0" in capsys.readouterr().err
