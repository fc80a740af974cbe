"""Fixtures on the real services: a vhost, a database and a table prefix on HBase of the test's own.

A plugin of the whole test tree (``tests/conftest.py``): the integration tests, the fault suite and the
network suite use them.
"""
from __future__ import annotations

import pytest

from tests.support.hbase import HBase, TestHBase
from tests.support.mysql import temporary_database
from tests.support.rabbitmq import temporary_vhost
from tests.support.site import Site


def pytest_configure(config):
    config.addinivalue_line("markers", "own_thrift: the test's hbase_server is a Thrift server of its own, "
                            "free to be stopped, killed and started")


@pytest.fixture
def amqp_vhost():
    with temporary_vhost() as name:
        yield name


@pytest.fixture
def mysql_db():
    """A database of the test's own, dropped afterwards; yields its name."""
    with temporary_database() as name:
        yield name


@pytest.fixture(scope="session")
def hbase_cluster():
    """The HBase the session shares (deploy/dev/hbase.sh), started here if its Thrift server does not answer."""
    hbase = HBase().ensure()
    yield hbase
    hbase.drain()  # the tests' tables, dropped in the background as they finished


@pytest.fixture
def hbase_server(request, hbase_cluster):
    """HBase through a table prefix of the test's own; its tables are dropped afterwards.

    ``url`` is its tables URL. Marked ``own_thrift``, the test gets a Thrift server of its own,
    and ``stop()``, ``kill()`` and ``start()`` act on it.
    """
    server = TestHBase(hbase_cluster, own_thrift=request.node.get_closest_marker("own_thrift") is not None)
    yield server
    server.close()


@pytest.fixture
def make_site(tmp_path, amqp_vhost, mysql_db, hbase_server):
    """Makes a ready site (ledger schema, a generated day) with the given options; stops its processes after."""
    made = []

    def make(events: int, options: dict, hot: float = 0.0, **settings):
        site = Site(tmp_path, amqp_vhost, mysql_db, hbase_server, options=options, **settings)
        site.init_ledger()
        site.generate(events, hot)
        made.append(site)
        return site

    yield make
    for site in made:
        site.stop_all(timeout=60)  # workers drain; a master or a worker a test started its own way goes too
