"""The local MariaDB of ``make services``: root's connection, throwaway databases, URLs, cut sessions."""
from __future__ import annotations

import contextlib
import urllib.parse
import uuid
from typing import Iterator

import pymysql

from tests.support.net import HOST

PORT = 3306
MYSQL = dict(host=HOST, port=PORT, user="root", password="", connect_timeout=10)  # root, as `make services` sets up


def mysql_admin(**options: object) -> pymysql.connections.Connection:
    """A connection as root, in autocommit; ``options`` add to or replace ``MYSQL``'s."""
    return pymysql.connect(**(MYSQL | {"autocommit": True} | options))


def mysql_url(database: str, user: str = "root", password: str = "", port: int = PORT) -> str:
    """``mysql://`` to ``database`` on the local server, the password (if any) encoded for a URL."""
    auth = f"{user}:{urllib.parse.quote(password, safe='')}" if password else user
    return f"mysql://{auth}@{HOST}:{port}/{database}"


@contextlib.contextmanager
def temporary_database(name: str | None = None) -> Iterator[str]:
    """A new database (``name``, or a new one), dropped afterwards with everything in it."""
    name = name or f"swarm_it_{uuid.uuid4().hex[:10]}"
    _as_root(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        _as_root(f"DROP DATABASE IF EXISTS `{name}`")


def _as_root(statement: str) -> None:
    try:
        conn = mysql_admin()
    except pymysql.MySQLError as exc:
        raise RuntimeError(f"MariaDB is not reachable on {HOST}:{PORT} ({exc}); start it with `make services`") \
            from exc
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION lock_wait_timeout = 20")  # a session left holding a lock: fail, not hang
            cur.execute(statement)
    finally:
        conn.close()


def kill_mysql_sessions(database: str) -> int:
    """Kill every connection using ``database``, as a failover or a network cut would."""
    conn = mysql_admin()
    killed = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                        (database,))
            for (pid,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(pid)}")
                    killed += 1
                except Exception:  # noqa: BLE001 - it may have gone by itself
                    pass
    finally:
        conn.close()
    return killed
