"""Shared fixtures. Tests that need real services carry the ``integration`` marker."""
from __future__ import annotations

import uuid

import pytest

from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.ledgers.sqlite import SqliteLedger
from swarm.tables.embedded import EmbeddedTables

# Headless Chromium for the web console's tests: chromium, browser_context, page, page_log.
pytest_plugins = ("tests.support.browser",)


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
    parser.addoption("--long", action="store_true", help="run the fault-injection suite at full length")
    parser.addoption("--fault-seed", type=int, default=None, help="reproduce a fault-suite run from its seed")
