"""`swarm deploy supervisord`: the rendered file as supervisord itself reads it."""
from __future__ import annotations

import os
import pwd
import shlex
import stat

import pytest
from supervisor.datatypes import RestartUnconditionally
from supervisor.options import ClientOptions, ServerOptions

from swarm import config, deploy
from swarm.autoscale import _credentials
from swarm.cli import EXIT_OK, EXIT_USAGE, main
from swarm.config import Config
from swarm.errors import ConfigError
from tests.support import ROOT

BROKER = "amqp://swarm:p%25w,d%23x@mq1:5672/%2F"  # a password with %, a comma and a hash, encoded
LEDGER = "mysql://swarm:s3cret-pw@db1:3306/swarm"
SITE = {"SWARM_BACKENDS_BROKER": BROKER, "SWARM_BACKENDS_LEDGER": LEDGER,
        "SWARM_BACKENDS_TABLES": "hbase://thrift1:9090", "SWARM_WORKER_JOB": "merchant_daily",
        "SWARM_JOBS_MODULES": "mycompany.jobs.a,mycompany.jobs.b", "SWARM_WORKER_STAGES": "scan,reduce",
        "SWARM_WORKER_DRAIN_SECONDS": "900"}


def site(tmp_path, env: dict | None = None, toml: str = "") -> Config:
    path = tmp_path / "swarm.toml"
    path.write_text(toml)
    return config.load(str(path), env=SITE | (env or {}))


def layout(tmp_path, **kw) -> deploy.Layout:
    for d in ("log", "run"):
        (tmp_path / d).mkdir(exist_ok=True)
    return deploy.Layout(**{"processes": 3, "log_dir": str(tmp_path / "log"), "run_dir": str(tmp_path / "run")} | kw)


def supervisord_reads(tmp_path, text: str) -> ServerOptions:
    path = tmp_path / "supervisord.conf"
    path.write_text(text)
    options = ServerOptions()
    options.configfile = str(path)
    options.process_config(do_usage=False)
    return options


def supervisorctl_reads(tmp_path) -> ClientOptions:
    """What supervisorctl makes of the file ``supervisord_reads`` wrote."""
    options = ClientOptions()
    options.realize(args=["-c", str(tmp_path / "supervisord.conf")])
    return options


def programs(options: ServerOptions) -> dict:
    return {g.name: g.process_configs for g in options.process_group_configs}


def test_supervisord_reads_the_worker_program(tmp_path):
    cfg = site(tmp_path)
    options = supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path)))
    procs = programs(options)["swarm-worker"]
    assert [p.name for p in procs] == ["swarm-worker-00", "swarm-worker-01", "swarm-worker-02"]
    for p in procs:
        assert (p.stopsignal.name, p.stopwaitsecs, p.stopasgroup, p.killasgroup) == ("SIGTERM", 900, True, True)
        assert p.autostart and p.autorestart is RestartUnconditionally and p.exitcodes == [0]
        assert p.command.split()[1:] == ["-m", "swarm.cli", "--config", str(tmp_path / "swarm.toml"), "worker"]
        assert p.directory == str(tmp_path)
    assert procs[1].stdout_logfile == str(tmp_path / "log" / "swarm-worker-01.log")
    [server] = options.configroot.supervisord.server_configs
    assert "unix://" + server["file"] == cfg["autoscale"]["supervisor_url"]
    assert supervisorctl_reads(tmp_path).serverurl == cfg["autoscale"]["supervisor_url"]


def test_the_environment_gives_a_worker_the_same_settings(tmp_path):
    cfg = site(tmp_path)
    [first, *_] = programs(supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path))))["swarm-worker"]
    assert first.environment["SWARM_BACKENDS_BROKER"] == BROKER
    seen = config.load(None, env=first.environment)
    for section in deploy.WORKER_SECTIONS:
        assert dict(seen[section]) == dict(cfg[section])


def test_a_password_from_a_file_stays_out_of_the_rendered_file(tmp_path):
    secret = tmp_path / "ledger.password"
    secret.write_text("file-pw-123\n")
    cfg = site(tmp_path, {"SWARM_BACKENDS_LEDGER": "mysql://swarm@db1:3306/swarm",
                          "SWARM_BACKENDS_LEDGER_PASSWORD_FILE": str(secret)})
    text = deploy.render(cfg, layout(tmp_path))
    assert "file-pw-123" not in text
    env = programs(supervisord_reads(tmp_path, text))["swarm-worker"][0].environment
    assert env["SWARM_BACKENDS_LEDGER"] == "mysql://swarm@db1:3306/swarm"
    # the worker reads the file itself and ends up with the same URL
    assert config.load(str(tmp_path / "swarm.toml"), env=env)["backends"]["ledger"] == cfg["backends"]["ledger"]


def test_each_process_gets_its_own_metrics_port(tmp_path):
    cfg = site(tmp_path, {"SWARM_WORKER_METRICS_PORT": "9100"})
    procs = programs(supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path))))["swarm-worker"]
    assert [p.environment["SWARM_WORKER_METRICS_PORT"] for p in procs] == ["9100", "9101", "9102"]
    with pytest.raises(ConfigError, match="worker.metrics_port"):
        deploy.render(site(tmp_path, {"SWARM_WORKER_METRICS_PORT": "9150"}), layout(tmp_path))


def test_with_the_autoscaler_it_starts_the_workers(tmp_path):
    cfg = site(tmp_path, {"SWARM_AUTOSCALE_MAX": "5"})
    procs = programs(supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path, processes=5, autoscale=True))))
    assert not any(p.autostart for p in procs["swarm-worker"])
    [scaler] = procs["swarm-autoscale"]
    assert scaler.autostart and scaler.command.endswith(" autoscale")
    assert scaler.environment["SWARM_AUTOSCALE_MAX"] == "5"
    with pytest.raises(ConfigError, match="autoscale.max is 5"):
        deploy.render(cfg, layout(tmp_path, processes=3, autoscale=True))


def test_supervisord_and_its_programs_run_as_the_user_who_may_use_the_socket(tmp_path):
    text = deploy.render(site(tmp_path), layout(tmp_path, user="root", autoscale=True, processes=4))
    options = supervisord_reads(tmp_path, text)
    assert {p.uid for group in programs(options).values() for p in group} == {0}
    section = options.configroot.supervisord
    assert (section.user, section.umask) == ("root", 0o027)
    [server] = section.server_configs
    assert (server["chown"], server["chmod"]) == ((0, -1), 0o770)


def autoscaler_url(options: ServerOptions) -> str:
    [scaler] = programs(options)["swarm-autoscale"]
    return scaler.environment["SWARM_AUTOSCALE_SUPERVISOR_URL"]


def test_the_socket_asks_for_a_generated_password_the_autoscaler_and_supervisorctl_are_given(tmp_path):
    cfg = site(tmp_path)
    text = deploy.render(cfg, layout(tmp_path, autoscale=True, processes=4))
    options = supervisord_reads(tmp_path, text)
    [server] = options.configroot.supervisord.server_configs
    assert server["username"] == "swarm" and len(server["password"]) >= 24
    ctl = supervisorctl_reads(tmp_path)
    assert (ctl.serverurl, ctl.username, ctl.password) == (cfg["autoscale"]["supervisor_url"], "swarm",
                                                           server["password"])
    # The autoscaler reaches the socket through its supervisor_url, which now carries the password.
    assert _credentials(autoscaler_url(options)) == ("swarm", server["password"], cfg["autoscale"]["supervisor_url"])
    again = deploy.render(cfg, layout(tmp_path, autoscale=True, processes=4))
    assert server["password"] not in again  # each site its own


def test_a_password_in_the_supervisor_url_is_the_sockets(tmp_path):
    cfg = site(tmp_path, {"SWARM_AUTOSCALE_SUPERVISOR_URL": "unix://ops:p%40ss@/run/swarm/s.sock"})
    options = supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path, autoscale=True, processes=4)))
    [server] = options.configroot.supervisord.server_configs
    assert (server["file"], server["username"], server["password"]) == ("/run/swarm/s.sock", "ops", "p@ss")
    assert _credentials(autoscaler_url(options)) == ("ops", "p@ss", "unix:///run/swarm/s.sock")


def test_the_supervisor_url_is_shown_without_its_password(tmp_path):
    cfg = site(tmp_path, {"SWARM_AUTOSCALE_SUPERVISOR_URL": "unix://ops:p%40ss@/run/swarm/s.sock"})
    assert cfg.describe()["autoscale"]["supervisor_url"] == "unix://ops:***@/run/swarm/s.sock"


def test_a_render_over_an_earlier_one_keeps_its_password(tmp_path):
    # A running supervisord keeps the password it started with: `supervisorctl update` must present it.
    out = tmp_path / "supervisord.conf"
    deploy.write_private(out, deploy.render(site(tmp_path), layout(tmp_path)))
    first = supervisorctl_reads(tmp_path).password
    kept = deploy.previous_password(out)
    assert kept == first
    deploy.write_private(out, deploy.render(site(tmp_path), layout(tmp_path, control_password=kept)))
    assert supervisorctl_reads(tmp_path).password == first
    assert deploy.previous_password(tmp_path / "none.conf") is None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file away")
def test_the_file_is_the_service_users_so_supervisord_can_read_it_again(tmp_path):
    out = tmp_path / "supervisord.conf"
    deploy.write_private(out, "text", owner="nobody")
    assert out.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_an_http_control_port_with_a_password(tmp_path):
    cfg = site(tmp_path, {"SWARM_AUTOSCALE_SUPERVISOR_URL": "http://ops:p%40ss@127.0.0.1:9011"})
    options = supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path)))
    [server] = options.configroot.supervisord.server_configs
    assert (server["port"], server["username"], server["password"]) == (9011, "ops", "p@ss")
    ctl = supervisorctl_reads(tmp_path)
    assert (ctl.serverurl, ctl.username, ctl.password) == ("http://127.0.0.1:9011", "ops", "p@ss")


@pytest.mark.parametrize("env, key", [
    ({"SWARM_BACKENDS_BROKER": "memory://"}, "backends.broker"),
    ({"SWARM_WORKER_JOB": ""}, "worker.job"),
    ({"SWARM_WORKER_JOB": 'say "hi"'}, "SWARM_WORKER_JOB"),
    ({"SWARM_AUTOSCALE_SUPERVISOR_URL": "ftp://x"}, "autoscale.supervisor_url"),
])
def test_what_cannot_work_is_refused_naming_the_key(tmp_path, env, key):
    with pytest.raises(ConfigError, match=key):
        deploy.render(site(tmp_path, env), layout(tmp_path))


def test_the_file_is_private_even_over_an_old_one(tmp_path):
    out = tmp_path / "supervisord.conf"
    out.write_text("old")
    out.chmod(0o644)
    deploy.write_private(out, "new")
    assert out.read_text() == "new"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_the_command_writes_the_file_and_shows_no_password(tmp_path, monkeypatch, capsys):
    for name, value in SITE.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "swarm.toml").write_text("")
    args = ["--config", str(tmp_path / "swarm.toml"), "deploy", "supervisord", "--log-dir", str(tmp_path),
            "--run-dir", str(tmp_path)]
    assert main(args) == EXIT_OK
    shown = capsys.readouterr()
    assert "s3cret-pw" not in shown.out + shown.err and "swarm:***@db1" in shown.out
    assert "password=***" in shown.out
    out = tmp_path / "out.conf"
    assert main([*args, "--out", str(out), "--processes", "2", "--env", "PYTHONPATH=/srv/app"]) == EXIT_OK
    password = deploy.previous_password(out)
    assert "s3cret-pw" not in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    procs = programs(supervisord_reads(tmp_path, out.read_text()))["swarm-worker"]
    assert len(procs) == 2 and procs[0].environment["SWARM_BACKENDS_LEDGER"] == LEDGER
    assert procs[0].environment["PYTHONPATH"] == "/srv/app"
    assert main([*args, "--out", str(out), "--processes", "2"]) == EXIT_OK  # rendered again: the same password
    assert deploy.previous_password(out) == password and password not in capsys.readouterr().out
    assert main([*args, "--env", "NOEQUALS"]) == EXIT_USAGE


def example() -> str:
    """The committed deploy/supervisord.conf: deploy/swarm.toml installed as the README says."""
    cfg = config.load(str(ROOT / "deploy" / "swarm.toml"), env={})
    layout = deploy.Layout(processes=cfg["worker"]["processes"], python="/opt/swarm/.venv/bin/python", user="swarm",
                           control_password="GENERATED-WHEN-RENDERED")
    return deploy.render(Config(cfg.data, "/etc/swarm/swarm.toml"), layout)


def test_the_committed_example_is_current():
    committed = (ROOT / "deploy" / "supervisord.conf").read_text()
    assert committed == example(), "regenerate it: python -m tests.unit.test_deploy"


if __name__ == "__main__":
    (ROOT / "deploy" / "supervisord.conf").write_text(example())


def test_the_example_config_shows_the_masters_alert_and_deadline():
    master = config.load(str(ROOT / "deploy" / "swarm.toml"), env={})["master"]
    assert shlex.split(master["alert_command"])[:2] == ["mail", "-s"]  # one word per argument, quotes honoured
    assert master["deadline"] == "06:00"
