"""Re-reading a config file while running: what applies live, what needs a restart, the file over the environment."""
from __future__ import annotations

import logging

from swarm.config import load
from swarm.reloading import LiveConfig, reread


def live(path, text, env=None, **appliers):
    path.write_text(text)
    seen: dict = {}
    for key in appliers:
        appliers[key] = (lambda k: lambda value: seen.__setitem__(k.replace("__", "."), value))(key)
    return LiveConfig(load(str(path), env or {}), {k.replace("__", "."): v for k, v in appliers.items()},
                      env or {}), seen


def test_a_live_setting_is_applied_and_the_others_are_named_as_needing_a_restart(tmp_path):
    path = tmp_path / "swarm.toml"
    config, seen = live(path, '[worker]\nlease = 30\n[log]\nlevel = "INFO"\n', log__level=None, worker__lease=None)
    path.write_text('[worker]\nlease = 45\ndrain_seconds = 60\n[log]\nlevel = "DEBUG"\n'
                    '[backends]\nledger = "mysql://swarm:secret@db2:3306/swarm"\n[options.toy]\ncount = 3\n')
    changes = config.reload()
    assert seen == {"log.level": "DEBUG", "worker.lease": 45.0}
    assert set(changes.applied) == {"log.level", "worker.lease"}
    assert set(changes.restart) == {"backends.ledger", "worker.drain_seconds", "options.toy.count"}
    assert changes.restart["backends.ledger"][1] == "mysql://swarm:***@db2:3306/swarm"  # never the password
    described = changes.describe()
    assert "worker.drain_seconds 600 -> 60 (render the supervisord config again: its stopwaitsecs)" in described
    assert "secret" not in described
    again = config.reload()  # applied ones are in effect now; the others are still named
    assert not again.applied and set(again.restart) == set(changes.restart)


def test_the_file_wins_over_the_variables_the_process_started_with_for_what_it_sets(tmp_path):
    path = tmp_path / "swarm.toml"
    env = {"SWARM_LOG_LEVEL": "INFO", "SWARM_WORKER_LEASE": "20"}
    path.write_text('[log]\nlevel = "WARNING"\n')
    assert reread(str(path), env)["log"]["level"] == "WARNING"
    assert reread(str(path), env)["worker"]["lease"] == 20.0  # not in the file: the variable still counts


def test_a_file_that_does_not_load_changes_nothing(tmp_path, caplog):
    path = tmp_path / "swarm.toml"
    config, seen = live(path, '[log]\nlevel = "INFO"\n', log__level=None)
    path.write_text('[log]\nlevel = "DEBUG"\nnot toml at all [\n')
    with caplog.at_level(logging.ERROR, logger="swarm.control"):
        assert config.reload() is None
    assert seen == {} and "could not be read, nothing changed" in caplog.text
    path.write_text('[log]\nlevel = "DEBUG"\n')
    assert set(config.reload().applied) == {"log.level"}


def test_a_setting_whose_applier_refuses_it_is_left_as_it_was(tmp_path, caplog):
    path = tmp_path / "swarm.toml"
    path.write_text('[log]\nlevel = "INFO"\n')

    def refuse(value):
        raise ValueError(f"log.level {value!r} is not a level")

    config = LiveConfig(load(str(path), {}), {"log.level": refuse}, {})
    path.write_text('[log]\nlevel = "LOUD"\n')
    changes = config.reload()
    assert not changes.applied and "log.level" in changes.restart
    assert "is not a level" in caplog.text


def test_without_a_config_file_there_is_nothing_to_reload(caplog):
    assert LiveConfig(_defaults(), {}).reload() is None
    assert "without a config file" in caplog.text


def _defaults():
    from swarm.config import DEFAULTS, Config

    return Config({**DEFAULTS, "options": {}})
