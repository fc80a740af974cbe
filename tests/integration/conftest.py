"""Fixtures on the real services: a vhost, a database and an HBase Thrift dev server of the test's own."""
from __future__ import annotations

import pytest

from swarm.hbase_dev import DevServer
from tests.support.mysql import temporary_database
from tests.support.rabbitmq import temporary_vhost
from tests.support.site import Site


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def amqp_vhost():
    with temporary_vhost() as name:
        yield name


@pytest.fixture
def mysql_db():
    """A database of the test's own, dropped afterwards; yields its name."""
    with temporary_database() as name:
        yield name


@pytest.fixture
def hbase_server(tmp_path):
    server = DevServer(str(tmp_path / "hbase-dev.db"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_site(tmp_path, amqp_vhost, mysql_db, hbase_server):
    """Makes a ready site (ledger schema, a generated day) with the given options; stops its workers after."""
    made = []

    def make(events: int, options: dict, **settings):
        site = Site(tmp_path, amqp_vhost, mysql_db, hbase_server, options=options, **settings)
        site.init_ledger()
        site.generate(events)
        made.append(site)
        return site

    yield make
    for site in made:
        site.stop()
