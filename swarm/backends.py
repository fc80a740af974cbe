"""Open a backend from its URL; say what is wrong with a URL without showing its secrets."""
from __future__ import annotations

import urllib.parse

from swarm.broker import Broker
from swarm.errors import ConfigError
from swarm.ledger import Ledger
from swarm.table import TableStore

BROKER_SCHEMES = ("memory", "amqp", "amqps")
LEDGER_SCHEMES = ("sqlite", "mysql")
TABLE_SCHEMES = ("embedded", "hbase")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: the only form of a URL that is logged."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def with_password(url: str, password: str) -> str:
    """``url`` (which has a user and no password) with ``password``, percent-encoded, as its password."""
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{urllib.parse.quote(password, safe='')}@{host}"))


def without_password(url: str) -> str:
    """``url`` with no password at all (not even ``***``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}@{host}"))


def _scheme(url: str, key: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{key}: expected a URL like {allowed[0]}://..., got {redact(str(url))!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in allowed:
        raise ConfigError(f"{key}: scheme {scheme!r} is not one of {', '.join(allowed)} (in {redact(url)})")
    return scheme


def file_path(url: str) -> str:
    """The path of ``sqlite:///path`` / ``embedded:///path``; ``:memory:`` for no path."""
    rest = url.split("://", 1)[1]
    if rest in ("", "/"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ConfigError(f"{redact(url)}: a file URL needs three slashes, as in sqlite:///var/swarm.db")
    return rest[1:]  # sqlite:///rel/path is relative, sqlite:////abs/path absolute


def check_url(key: str, url: str) -> None:
    """Raise ``ConfigError`` naming ``key`` when ``url`` has the wrong scheme."""
    allowed = {"broker": BROKER_SCHEMES, "ledger": LEDGER_SCHEMES, "tables": TABLE_SCHEMES}[key.rsplit(".", 1)[-1]]
    _scheme(url, key, allowed)


def open_broker(url: str) -> Broker:
    scheme = _scheme(url, "broker", BROKER_SCHEMES)
    if scheme == "memory":
        from swarm.brokers.memory import MemoryBroker, hub

        return MemoryBroker(hub(url.split("://", 1)[1] or "default"))
    from swarm.brokers.rabbitmq import RabbitBroker

    return RabbitBroker(url)


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
