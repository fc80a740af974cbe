"""``hbase://`` URLs: options and the errors for bad ones. Nothing here connects."""
from __future__ import annotations

import pytest

from swarm.backends import open_tables
from swarm.errors import BackendError, ConfigError
from swarm.tables.hbase import HBaseTables


def test_defaults():
    tables = HBaseTables("hbase://hbase-thrift.example")
    assert (tables.host, tables.port, tables.pool_size, tables.timeout_ms) == ("hbase-thrift.example", 9090, 10, 60000)
    assert (tables.transport, tables.protocol, tables.prefix, tables.retries) == ("buffered", "binary", "", 8)


def test_options():
    tables = HBaseTables(
        "hbase://h:9191/?pool_size=3&timeout_ms=0&table_prefix=nightly&transport=framed&protocol=compact"
        "&retries=2&backoff=0.5&backoff_max=1"
    )
    assert (tables.port, tables.pool_size, tables.timeout_ms, tables.prefix) == (9191, 3, 0, "nightly")
    assert (tables.transport, tables.protocol, tables.retries, tables.backoff, tables.backoff_max) == (
        "framed", "compact", 2, 0.5, 1.0,
    )


def test_open_tables_does_not_connect():
    tables = open_tables("hbase://127.0.0.1:1")  # nothing listens on port 1
    assert isinstance(tables, HBaseTables)
    tables.close()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("hbase://h?pool=3", "unknown option 'pool'"),
        ("hbase://h?pool_size=0", "pool_size='0'"),
        ("hbase://h?timeout_ms=soon", "timeout_ms='soon'"),
        ("hbase://h?retries=-1", "retries='-1'"),
        ("hbase://h?transport=http", "transport='http'.*buffered, framed"),
        ("hbase://h?protocol=json", "protocol='json'"),
        ("hbase://h:notaport", "hbase://h: the port of server 1 \\(h\\) is not a number"),  # redacted: the host
        ("hbase://h/some/path", "unexpected path"),
    ],
)
def test_bad_urls_name_what_is_wrong(url, match):
    with pytest.raises(ConfigError, match=match):
        HBaseTables(url)


def test_credentials_are_refused_without_being_shown():
    with pytest.raises(ConfigError) as caught:
        HBaseTables("hbase://admin:s3cret@h:9090")
    assert "does not authenticate" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_a_closed_store_says_so():
    tables = HBaseTables("hbase://127.0.0.1:1")
    tables.close()
    with pytest.raises(BackendError, match="closed"):
        tables.tables()
