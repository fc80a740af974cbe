"""Open a backend from its URL (the URL rules themselves are in ``swarm.urls``)."""
from __future__ import annotations

from swarm.broker import Broker
from swarm.ledger import Ledger
from swarm.table import TableStore
from swarm.urls import (  # noqa: F401 - re-exported: callers open backends and show URLs from one place
    BROKER_SCHEMES,
    LEDGER_SCHEMES,
    QUOTE_HINT,
    TABLE_SCHEMES,
    _scheme,
    check_credentials,
    check_url,
    clean_credentials,
    file_path,
    redact,
    with_password,
    without_password,
)


def open_broker(url: str, serve: bool = True) -> Broker:
    """The broker at ``url``; ``serve=False`` for a process that never serves (the master, one-shot commands).

    On RabbitMQ that one pumps its connection on each caller's thread and
    cannot consume; the in-process broker is the same either way.
    """
    scheme = _scheme(url, "broker", BROKER_SCHEMES)
    if scheme == "memory":
        from swarm.brokers.memory import MemoryBroker, hub

        return MemoryBroker(hub(url.split("://", 1)[1] or "default"))
    from swarm.brokers.rabbitmq import BlockingRabbitBroker, RabbitBroker

    return RabbitBroker(url) if serve else BlockingRabbitBroker(url)


def open_ledger(url: str, create: bool = True) -> Ledger:
    """``create=False``: a SQLite file that is missing raises ``LedgerNotFound`` (MySQL never creates one)."""
    scheme = _scheme(url, "ledger", LEDGER_SCHEMES)
    if scheme == "sqlite":
        from swarm.ledgers.sqlite import SqliteLedger

        return SqliteLedger(file_path(url), create=create)
    from swarm.ledgers.mysql import MysqlLedger

    return MysqlLedger(url)


def open_tables(url: str) -> TableStore:
    scheme = _scheme(url, "tables", TABLE_SCHEMES)
    if scheme == "embedded":
        from swarm.tables.embedded import EmbeddedTables

        return EmbeddedTables(file_path(url))
    from swarm.tables.hbase import HBaseTables

    return HBaseTables(url)
