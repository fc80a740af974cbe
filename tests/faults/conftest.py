from tests.integration.conftest import amqp_vhost, hbase_server, mysql_db  # noqa: F401 - shared fixtures
