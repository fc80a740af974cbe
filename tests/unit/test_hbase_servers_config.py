"""A tables URL naming several Thrift servers goes through the config, `config check` and supervisord unchanged."""
from __future__ import annotations

import pytest

from swarm import config, deploy
from swarm.errors import ConfigError
from tests.unit.test_deploy import layout, programs, site, supervisord_reads

SERVERS = "hbase://thrift1:9090,thrift2:9091?table_prefix=nightly&timeout_ms=20000"


def test_the_config_takes_a_list_of_servers_and_shows_it_whole(tmp_path):
    cfg = site(tmp_path, {"SWARM_BACKENDS_TABLES": SERVERS})
    assert cfg["backends"]["tables"] == SERVERS
    assert cfg.describe()["backends"]["tables"] == SERVERS


def test_a_bad_server_in_the_list_stops_the_config_with_the_server_named(tmp_path):
    with pytest.raises(ConfigError, match=r"backends.tables: the port of server 2 \(thrift2\) is not a number"):
        site(tmp_path, {"SWARM_BACKENDS_TABLES": "hbase://thrift1:9090,thrift2:90x"})


def test_supervisord_hands_the_list_to_the_workers_unchanged(tmp_path):
    cfg = site(tmp_path, {"SWARM_BACKENDS_TABLES": SERVERS})
    [first, *_] = programs(supervisord_reads(tmp_path, deploy.render(cfg, layout(tmp_path))))["swarm-worker"]
    assert first.environment["SWARM_BACKENDS_TABLES"] == SERVERS
    assert config.load(None, env=first.environment)["backends"]["tables"] == SERVERS


def test_config_check_tries_each_server_once_within_its_time():
    from swarm.check import _try_once
    from swarm.tables.hbase import HBaseTables

    store = HBaseTables("hbase://a:1,b:2,c:3?retries=8&timeout_ms=60000")
    _try_once(store, timeout=6)
    assert (store.retries, store.timeout_ms, store.backoff) == (2, 2000, 0)
