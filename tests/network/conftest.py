from tests.integration.conftest import (  # noqa: F401 - shared fixtures
    amqp_vhost,
    hbase_cluster,
    hbase_server,
    make_site,
    mysql_db,
    pytest_configure,
)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/network/" in str(item.fspath).replace("\\", "/"):
            item.add_marker("network")
            item.add_marker("integration")
