import pytest

from swarm import config
from swarm.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "swarm.toml"
    path.write_text(text)
    return str(path)


def test_defaults_are_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config.load(env={})
    assert cfg["backends"]["broker"] == "memory://"
    assert cfg["worker"]["lease"] == 60.0


def test_file_then_env_override(tmp_path):
    path = write(tmp_path, '[backends]\nbroker = "amqp://guest:guest@mq:5672/%2F"\n[worker]\nlease = 30\n'
                           '[options.merchant_daily]\nchunks = 64\n')
    cfg = config.load(path, env={"SWARM_WORKER_LEASE": "12.5", "SWARM_WORKER_STAGES": "scan, reduce"})
    assert cfg["worker"]["lease"] == 12.5
    assert cfg["worker"]["stages"] == ["scan", "reduce"]
    assert cfg.options("merchant_daily") == {"chunks": 64}
    assert cfg.describe()["backends"]["broker"] == "amqp://guest:***@mq:5672/%2F"


@pytest.mark.parametrize("text, env, key", [
    ("[worker]\nleese = 3\n", {}, "worker.leese"),
    ("[wroker]\n", {}, "wroker"),
    ("[worker]\nlease = 'soon'\n", {}, "worker.lease"),
    ("[worker]\nprocesses = 'many'\n", {}, "worker.processes"),
    ("", {"SWARM_MASTER_POLLL": "1"}, "master.polll"),
    ("", {"SWARM_MASTER_POLL": "-1"}, "master.poll"),
    ("[backends]\nledger = 'postgres://x'\n", {}, "backends.ledger"),
    ("[backends\n", {}, "not valid TOML"),
    ("[master]\ndeadline = '7am'\n", {}, "master.deadline"),
])
def test_bad_config_names_the_key(tmp_path, text, env, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.load(write(tmp_path, text), env=env)


def test_errors_never_show_a_password(tmp_path):
    with pytest.raises(ConfigError) as err:
        config.load(write(tmp_path, "[backends]\nledger = 'postgres://root:hunter2@db/x'\n"), env={})
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


def test_missing_file_is_an_error():
    with pytest.raises(ConfigError, match="does not exist"):
        config.load("/nonexistent/swarm.toml", env={})
