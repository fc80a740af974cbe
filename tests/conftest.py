"""Shared fixtures. Tests that need real services carry the ``integration`` marker."""
from __future__ import annotations

import json
import uuid

import pytest

from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.ledgers.sqlite import SqliteLedger
from swarm.tables.embedded import EmbeddedTables

# Headless Chromium for the web console's tests: chromium, browser_context, page, page_log; and the fixtures on
# the real services: amqp_vhost, mysql_db, hbase_cluster, hbase_server, make_site.
pytest_plugins = ("tests.support.browser", "tests.support.services")


@pytest.fixture
def hub() -> MemoryHub:
    return MemoryHub()


@pytest.fixture
def broker(hub) -> MemoryBroker:
    return MemoryBroker(hub)


@pytest.fixture
def ledger(tmp_path) -> SqliteLedger:
    led = SqliteLedger(str(tmp_path / "ledger.db"))
    yield led
    led.close()


@pytest.fixture
def tables() -> EmbeddedTables:
    store = EmbeddedTables()
    yield store
    store.close()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", help="run the fault and network suites at full length")
    parser.addoption("--fault-seed", type=int, default=None, help="reproduce a fault-suite run from its seed")
    parser.addoption("--network-seed", type=int, default=None, help="reproduce a network-suite run from its seed")


def pytest_collection_modifyitems(items):
    """The network suite first: in `make test` it is the longest file of the parallel run, and must not start last."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/network/"))


# The network suite's score: kept by the process that ran its nights (a pytest-xdist worker, in `make test`),
# handed to the controlling process, printed there with the seed.
NETWORK_SCORE = "swarm_network_score"


def pytest_sessionfinish(session):
    from tests.support.scoring import NETWORK

    output = getattr(session.config, "workeroutput", None)
    if output is not None and NETWORK.seed is not None:
        output[NETWORK_SCORE] = json.dumps(NETWORK.to_json())


def pytest_testnodedown(node, error):
    from tests.support.scoring import NETWORK

    data = getattr(node, "workeroutput", {}).get(NETWORK_SCORE)
    if data:
        NETWORK.merge(json.loads(data))


def pytest_terminal_summary(terminalreporter):
    from tests.support.scoring import NETWORK

    if NETWORK.seed is None:
        return
    terminalreporter.write_sep("=", f"network faults, on {NETWORK.hosts}")
    for line in NETWORK.lines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"reproduce with: pytest tests/network --network-seed {NETWORK.seed}")
