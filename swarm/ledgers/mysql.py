"""The production ledger: MySQL or MariaDB over PyMySQL (``mysql://user:password@host:port/database``).

TLS: ``?ssl_ca=PATH`` encrypts every connection and verifies the server's
certificate against that CA, and its name against the URL's host unless
``ssl_verify_identity=false``; ``ssl_cert=PATH`` and ``ssl_key=PATH`` add a
client certificate. Besides ``lock_timeout`` (below), any other query option is refused.

One connection per thread, with timeouts. A transaction that fails on a
deadlock, a lock wait timeout or a lost connection is run again from the
start on a new connection, a bounded number of times. Concurrent claims,
and concurrent completes, from the threads of one process share one
transaction and one commit (group commit, ``swarm.ledgers.group.Group``);
each caller still gets its own outcome. The master's lock is
``GET_LOCK`` held by a connection of its own, so it ends with the master's
session even when the master is killed, or cut off (``swarm.ledgers.masterlock``;
``?lock_timeout=SECONDS``, default 60, is how long the server waits for a silent master).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator, Mapping

import pymysql
from pymysql.connections import Connection
from pymysql.constants import CLIENT

from swarm import tls
from swarm.errors import BackendError, BackendRefused, ConfigError, MasterLocked, MasterLockLost
from swarm.ledgers.clock import ServerClock
from swarm.ledgers.core import T, Work, close_quietly
from swarm.ledgers.group import SplitGroup
from swarm.ledgers.masterlock import HeldLock
from swarm.ledgers.sql import SqlLedger
from swarm.urls import redact

log = logging.getLogger("swarm.ledger.mysql")

LOCK_CONFLICTS = {1205, 1213}  # lock wait timeout, deadlock
# Access denied (to the server, a database, a command, a column, a privilege), an unknown database:
# the server answered, and a new attempt gets the same answer.
REFUSALS = {1044, 1045, 1049, 1142, 1143, 1227, 1698}
# Server gone, lost during a query, cannot connect, killed, idle too long, shutting down.
CONNECTION_LOST = {2003, 2006, 2013, 2055, 1927, 4031, 1053}
NO_SUCH_TABLE = 1146
CANNOT_CONNECT = 2003  # PyMySQL's code for any failure while connecting, TLS handshake included
MAX_LOCK_NAME = 64  # GET_LOCK's limit on MySQL
LOCK_TIMEOUT = 60.0  # a master's lock session silent this long is ended by the server (?lock_timeout=)
UNNAMED_HOLDER = "a master that has not named itself yet"  # between its GET_LOCK and its row in swarm_locks
DRIVER_ERRORS = (pymysql.MySQLError, OSError)


@dataclasses.dataclass(frozen=True)
class Target:
    host: str
    port: int
    user: str | None
    password: str = dataclasses.field(repr=False)
    database: str
    ssl: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # pymysql.connect's ssl_* arguments
    lock_timeout: float = LOCK_TIMEOUT  # seconds of silence after which the server ends a master's lock session


class MysqlLedger(SqlLedger):
    connect_timeout = 10
    # Above the lock wait below: a transaction waiting on a lock then ends
    # with error 1205 (retried) instead of a client timeout that leaves its
    # session running on the server.
    read_timeout = 60
    write_timeout = 60
    lock_wait_timeout = 20
    # A session idle inside a transaction this long has lost its client (cut off mid-transaction): MariaDB
    # ends it, and frees its row locks, which would otherwise stall every claim on them until wait_timeout (8 h).
    idle_transaction_timeout = 15
    schema_lock_wait = 30
    attempts = 8  # per transaction; the pauses between them add up to about 5 s
    retry_for = 45.0  # and no new attempt after this many seconds, lock waits included
    backoff = 0.05
    max_backoff = 2.0
    LOCK_LEASE = 60.0  # the expiry shown in swarm_locks; the lock itself lives as long as its session

    group_commit = True
    lock_rows = " FOR UPDATE"

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.target = parse_url(url)
        self._conns: dict[threading.Thread, Connection] = {}
        self._conns_guard = threading.Lock()
        self._masters: dict[str, HeldLock] = {}
        self._masters_guard = threading.Lock()
        self._mariadb = True
        self._clock = ServerClock(self._server_time)

    def now(self) -> float:  # type: ignore[override]
        """The database server's time: every host's leases and times go by the one clock (``swarm.ledgers.clock``)."""
        return self._clock.now()

    def _server_time(self) -> float:
        def work(cur: Any) -> float:
            cur.execute("SET time_zone = '+00:00'")  # no daylight-saving hour read twice
            cur.execute("SELECT UNIX_TIMESTAMP(NOW(6))")
            return float(cur.fetchone()[0])

        try:
            return self._attempt(work)  # once: a clock reading is not worth waiting for
        except DRIVER_ERRORS as exc:
            raise self._failure(exc, 1) from None

    # the dialect ----------------------------------------------------------------

    def _sql(self, statement: str) -> str:
        return statement.replace("%", "%%").replace("?", "%s")

    def _ddl(self, statement: str) -> str:
        # Keys compare as exact bytes with no trailing-space padding, so that
        # "a", "A" and "a " are three ids, as they are in SQLite.
        binary = "utf8mb4_nopad_bin" if self._mariadb else "utf8mb4_0900_bin"
        types = {
            "key": f"VARCHAR(255) CHARACTER SET utf8mb4 COLLATE {binary}",
            # The charset's default collation ignores case: error searches do, as in SQLite.
            "text": "MEDIUMTEXT CHARACTER SET utf8mb4",
            "blob": "MEDIUMBLOB",
            "real": "DOUBLE",
            "autoid": "BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY",
            "table_options": f" ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={binary}",
        }
        return statement.format(**types)

    def _floor(self, expr: str) -> str:
        return f"FLOOR({expr})"  # CAST AS SIGNED rounds to the nearest

    def _insert_new(self, table: str, columns: str) -> str:
        # Not INSERT IGNORE: it turns every error into a warning, so an
        # over-long id would be cut short and collide with another. Assigning
        # the key to itself changes nothing and locks the existing row
        # exclusively at once, so two claims of one message queue up instead of
        # deadlocking on a shared-to-exclusive lock upgrade.
        marks = ", ".join("?" for _ in columns.split(","))
        first = columns.split(",")[0].strip()
        return f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {first} = {first}"

    def _create_index(self, cur: Any, name: str, table: str, columns: str) -> None:
        if not _in_schema(cur, "statistics", "index_name", table, name):
            cur.execute(f"CREATE INDEX {name} ON {table} ({columns})")

    def _add_column(self, cur: Any, table: str, column: str, kind: str) -> None:
        if not _in_schema(cur, "columns", "column_name", table, column):
            cur.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        conn = self._retrying(self._take_schema_lock)
        try:
            yield
        finally:
            close_quietly(conn)

    def _take_schema_lock(self) -> Connection:
        conn = self._connect(autocommit=True)
        try:
            if scalar(conn, "SELECT GET_LOCK(%s, %s)", (self._lock_name("schema", ""), self.schema_lock_wait)) != 1:
                raise BackendError(
                    f"MySQL ledger {redact(self.url)}: another process has been changing the schema "
                    f"for over {self.schema_lock_wait} s; try again when it has finished"
                )
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    # connections ------------------------------------------------------------------

    def _connect(self, autocommit: bool = False) -> Connection:
        t = self.target
        conn = pymysql.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, database=t.database,
            charset="utf8mb4", autocommit=autocommit,
            # The login's reads too are bounded by connect_timeout: a server that accepts and never answers
            # must not hold a connect for read_timeout.
            connect_timeout=self.connect_timeout, read_timeout=self.connect_timeout, write_timeout=self.write_timeout,
            # rowcount counts the rows an UPDATE matched, as SQLite does, not only those it changed.
            client_flag=CLIENT.FOUND_ROWS, **t.ssl,
        )
        conn._read_timeout = self.read_timeout  # then each read's bound; PyMySQL applies it at the next read
        try:
            with conn.cursor() as cur:
                # No gap locks: two transactions that each look for a missing
                # row and then insert it would deadlock on the gap under REPEATABLE READ.
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute(
                    "SET SESSION innodb_lock_wait_timeout = %s, SESSION sql_mode = %s",
                    (self.lock_wait_timeout, "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"),
                )
                self._mariadb = "mariadb" in conn.get_server_info().lower()
                if self._mariadb:  # MySQL has no such setting (see README, Partitions and clocks)
                    cur.execute("SET SESSION idle_transaction_timeout = %s", (self._idle_transaction_limit(),))
        except BaseException:
            close_quietly(conn)
            raise
        return conn

    def _idle_transaction_limit(self) -> int:
        """``idle_transaction_timeout``, and under half the lock's: a master's transaction whose COMMIT the
        network held back ends before its lock can pass to another master (the lock's session is at most a
        quarter of lock_timeout silent when the partition begins, and the server waits the rest)."""
        return max(1, min(self.idle_transaction_timeout, int(self.target.lock_timeout // 2)))

    def _connection(self) -> Connection:
        """This thread's connection, made anew when there is none or it was closed."""
        me = threading.current_thread()
        with self._conns_guard:
            conn = self._conns.get(me)
        if conn is not None and conn.open:
            return conn
        conn = self._connect()
        with self._conns_guard:
            for gone in [t for t in self._conns if not t.is_alive()]:
                close_quietly(self._conns.pop(gone))
            self._conns[me] = conn
        return conn

    def _discard(self, conn: Connection) -> None:
        with self._conns_guard:
            if self._conns.get(threading.current_thread()) is conn:
                del self._conns[threading.current_thread()]
        close_quietly(conn)

    def close(self) -> None:
        with self._masters_guard:
            held, self._masters = list(self._masters.values()), {}
        with self._conns_guard:
            conns, self._conns = list(self._conns.values()), {}
        for lock in held:
            lock.give_up()
        for conn in conns:
            close_quietly(conn)

    # transactions -----------------------------------------------------------------

    def _transaction(self, work: Work[T]) -> T:
        self._fence()
        return self._retrying(lambda: self._attempt(work))

    def _group_transaction(self, work: Work[T]) -> T:
        # Only failures a new attempt cannot cure split the group: on a lost
        # connection or a lock conflict the whole group runs again, as one call
        # alone would, and a COMMIT that landed unacknowledged is recognised per message.
        self._fence()
        return self._retrying(lambda: self._group_attempt(work))

    def _group_attempt(self, work: Work[T]) -> T:
        try:
            return self._attempt(work)
        except Exception as exc:
            if isinstance(exc, DRIVER_ERRORS) and transient(exc) or isinstance(exc, MasterLockLost):
                raise
            raise SplitGroup(describe(exc)) from exc

    def _attempt(self, work: Work[T]) -> T:
        conn = self._connection()
        try:
            cur = conn.cursor()
            try:
                result = work(cur)
                self._fence_in(cur)
            finally:
                close_quietly(cur)
            self._commit(conn)
            return result
        except BaseException as exc:
            self._roll_back(conn, exc)
            raise

    def _commit(self, conn: Connection) -> None:
        conn.commit()

    def _roll_back(self, conn: Connection, exc: BaseException) -> None:
        # After an interrupt or a lost connection the session's state is
        # unknown: a new connection is the only safe next step, and the
        # server rolls back what the old one left open.
        if not isinstance(exc, Exception) or lost_connection(exc) or not conn.open:
            self._discard(conn)
            return
        try:
            conn.rollback()
        except DRIVER_ERRORS:
            self._discard(conn)

    def _retrying(self, action: Callable[[], T]) -> T:
        """``action()``, again after a growing pause while it fails in a way a new attempt can cure."""
        give_up = time.monotonic() + self.retry_for
        attempt = 0
        while True:
            attempt += 1
            try:
                return action()
            except DRIVER_ERRORS as exc:
                if not transient(exc) or attempt >= self.attempts or time.monotonic() > give_up:
                    raise self._failure(exc, attempt) from None
                log.warning(
                    "MySQL ledger %s: %s; trying again (%d of %d)",
                    redact(self.url), self._scrub(describe(exc)), attempt + 1, self.attempts,
                )
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))

    def _failure(self, exc: BaseException, attempt: int) -> BackendError:
        text = describe(exc)
        if refused(exc):
            return BackendRefused(f"MySQL ledger {redact(self.url)}: {self._scrub(text)}; check backends.ledger "
                                  "(its user, password, database and the grants in deploy/grants)")
        if error_code(exc) == NO_SUCH_TABLE:
            text += "; create the tables with `swarm db init`"
        if transient(exc):
            text += f" (gave up after {attempt} attempts)"
        return BackendError(f"MySQL ledger {redact(self.url)}: {self._scrub(text)}")

    def _scrub(self, text: str) -> str:
        """``text`` without the password, should the server or driver ever echo it."""
        password = self.target.password
        return text.replace(password, "***") if password else text

    def stored_schema_version(self) -> int | None:
        """The schema version the database holds, None when it holds no Swarm schema; creates nothing."""
        def work(cur: Any) -> int | None:
            cur.execute("SELECT COUNT(*) FROM information_schema.tables "
                        "WHERE table_schema = DATABASE() AND table_name = 'swarm_schema'")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SELECT version FROM swarm_schema")
            row = cur.fetchone()
            return 0 if row is None else int(row[0])

        return self._transaction(work)

    # the master's lock ---------------------------------------------------------------

    def lock_master(self, key: str, holder: str) -> None:
        me = f"{socket.gethostname()}:{os.getpid()}:{holder}"
        with self._masters_guard:
            held = self._masters.get(key)
            if held is not None:
                if held.holder != me:
                    raise MasterLocked(key, held.holder)
                if held.holds(time.monotonic()) and self._still_held(held):
                    return
                # Kept though given up: until it is taken again, the fence holds this master's transactions back
                held.give_up(f"not confirmed for {time.monotonic() - held.confirmed:.1f} s")
            self._masters[key] = self._retrying(lambda: self._take_lock(key, holder, me))

    def _still_held(self, held: HeldLock) -> bool:
        try:
            return held.confirm(self._confirm_lock)
        except DRIVER_ERRORS as exc:
            log.warning("MySQL ledger %s: the master's lock on %s is not sure: %s", redact(self.url), held.key,
                        describe(exc))
            return False

    def _fence(self) -> None:
        """A master's transactions run only while its lock surely holds.

        Once it may have lapsed, each raises ``MasterLockLost`` until the master takes
        the lock again (``lock_master``): another master may have run meanwhile.
        """
        if not self._masters:
            return  # a worker's ledger, or a master's between runs
        now = time.monotonic()
        for key, held in list(self._masters.items()):
            if not held.holds(now):
                why = "given up" if held.lost else f"not confirmed for {now - held.confirmed:.1f} s"
                held.give_up(why)
                raise MasterLockLost(key, why)

    def _fence_in(self, cur: Any) -> None:
        """Inside a master's transaction, before its COMMIT: the server still gives each of its locks to its session.

        The check the clock cannot make: a transaction the network held back past the
        lock's passing to another master is rolled back, not committed late.
        """
        for key, held in list(self._masters.items()):
            cur.execute("SELECT IS_USED_LOCK(%s)", (held.name,))
            session = cur.fetchone()[0]
            if session != held.session:
                why = f"the server gives it to {'no session' if session is None else f'session {session}'}"
                held.give_up(why)
                raise MasterLockLost(key, why)

    def _take_lock(self, key: str, who: str, me: str) -> HeldLock:
        conn = self._connect(autocommit=True)
        timeout = self.target.lock_timeout
        try:
            name = self._lock_name("master", key)
            with conn.cursor() as cur:
                # A master silent this long (cut off, or frozen) loses its session and the lock with it
                cur.execute("SET SESSION wait_timeout = %s", (max(1, math.ceil(timeout)),))
                cur.execute("SELECT CONNECTION_ID()")
                session = int(cur.fetchone()[0])
                sent = time.monotonic()
                cur.execute("SELECT GET_LOCK(%s, 0)", (name,))
                if cur.fetchone()[0] != 1:
                    self._refuse_lock(cur, key, name, me)
                self._name_holder(cur, key, me)
        except BaseException:
            close_quietly(conn)
            raise
        held = HeldLock(conn, name, me, key, who, timeout, confirmed=sent, session=session)
        held.keep(self._confirm_lock)
        return held

    def _refuse_lock(self, cur: Any, key: str, name: str, me: str) -> None:
        """GET_LOCK said no: ``MasterLocked`` naming the holder, or a wait if it is this master's own old session."""
        cur.execute("SELECT holder FROM swarm_locks WHERE name = %s", (key,))
        row = cur.fetchone()
        cur.execute("SELECT IS_USED_LOCK(%s)", (name,))
        session = cur.fetchone()[0]
        holder = row[0] if row is not None else UNNAMED_HOLDER
        if session is None:
            raise MasterLocked(key, holder)
        if holder == me:
            # This master's own earlier session, cut off: the server ends it after lock_timeout, then it is free
            raise BackendError(f"MySQL ledger {redact(self.url)}: the lock on {key} is still held by this master's "
                               f"earlier session, which the server ends after {self.target.lock_timeout:g} s of "
                               "silence")
        raise MasterLocked(key, f"{holder} (MySQL connection {session})")

    def _confirm_lock(self, held: HeldLock) -> bool:
        """From the lock's keeper: whether its session still holds it (the holder's row refreshed if so)."""
        with held.conn.cursor() as cur:
            cur.execute("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", (held.name,))
            if cur.fetchone()[0] != 1:
                return False
            self._name_holder(cur, held.key, held.holder)
        return True

    def _name_holder(self, cur: Any, key: str, holder: str) -> None:
        cur.execute(
            "REPLACE INTO swarm_locks (name, holder, expires_at) VALUES (%s, %s, %s)",
            (key, holder, self.now() + self.LOCK_LEASE),
        )

    def master_holder(self, key: str) -> str | None:
        # The lock is the session's GET_LOCK; swarm_locks only names who took it, and may outlive it.
        row = self._row(
            "SELECT IS_USED_LOCK(?), (SELECT holder FROM swarm_locks WHERE name = ?)",
            (self._lock_name("master", key), key),
        )
        if row is None or row[0] is None:
            return None
        return row[1] if row[1] is not None else UNNAMED_HOLDER

    def unlock_master(self, key: str) -> None:
        with self._masters_guard:
            held = self._masters.pop(key, None)
        if held is None:
            return  # never held here: another master's lock is not ours to release
        held.stop()
        if held.lost:
            return  # its session is closed already
        with held.asking:
            try:
                with held.conn.cursor() as cur:
                    cur.execute("DELETE FROM swarm_locks WHERE name = %s AND holder = %s", (key, held.holder))
                    cur.execute("SELECT RELEASE_LOCK(%s)", (held.name,))
            except DRIVER_ERRORS as exc:
                log.warning("MySQL ledger %s: releasing the master's lock on %s: %s", redact(self.url), key,
                            describe(exc))
            finally:
                close_quietly(held.conn)  # ends the session, which frees the lock in any case

    def _lock_name(self, kind: str, key: str) -> str:
        # Lock names are server-wide: the database in the name keeps two
        # deployments sharing a server apart.
        name = f"swarm.{kind}:{self.target.database}:{key}"
        if len(name) <= MAX_LOCK_NAME:
            return name
        return f"swarm.{kind}:" + hashlib.sha256(name.encode()).hexdigest()[: MAX_LOCK_NAME - len(kind) - 7]


TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_identity")
OPTIONS = (*TLS_OPTIONS, "lock_timeout")


def parse_url(url: str) -> Target:
    """The parts of ``mysql://user:password@host:port/database?ssl_ca=...``; ``ConfigError`` naming what is wrong."""
    expected = "expected mysql://user:password@host:port/database"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port or 3306
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ConfigError(f"ledger: {expected}, got {redact(url)} ({exc})") from None
    database = urllib.parse.unquote(parts.path[1:])
    if parts.scheme.lower() != "mysql" or not database or "/" in database:
        raise ConfigError(f"ledger: {expected}, got {redact(url)}")
    unknown = sorted(set(query) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"ledger: unknown option {', '.join(unknown)} in {redact(url)}; "
                          f"the options are {', '.join(OPTIONS)}")
    options = {name: values[-1] for name, values in query.items()}
    return Target(
        host=parts.hostname or "127.0.0.1",
        port=port,
        user=None if parts.username is None else urllib.parse.unquote(parts.username),
        password=urllib.parse.unquote(parts.password or ""),
        database=database,
        ssl=ssl_arguments({k: v for k, v in options.items() if k in TLS_OPTIONS}),
        lock_timeout=_lock_timeout(options.get("lock_timeout"), url),
    )


def _lock_timeout(text: str | None, url: str) -> float:
    if text is None:
        return LOCK_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 1 <= seconds <= 86400:
        raise ConfigError(f"ledger: lock_timeout must be seconds from 1 to 86400, got {text[:60]!r} in {redact(url)}")
    return seconds


def ssl_arguments(options: Mapping[str, str]) -> dict[str, Any]:
    """pymysql.connect's TLS arguments for a URL's options; none without options."""
    if not options:
        return {}
    if not options.get("ssl_ca"):
        raise ConfigError(f"ledger: option {', '.join(sorted(options))} needs ssl_ca, the CA certificate "
                          f"that signed the server's certificate")
    verify_identity = tls.flag("ledger", "ssl_verify_identity", options.get("ssl_verify_identity"), default=True)
    # PyMySQL reads the files only when it connects: check them now, so a bad one is a ConfigError at start.
    tls.client_context("ledger", options, check_hostname=verify_identity)
    arguments = {name: options.get(name) for name in ("ssl_ca", "ssl_cert", "ssl_key") if options.get(name)}
    # ssl_verify_cert must be explicit: PyMySQL does not verify the server's certificate for ssl_ca alone.
    return arguments | {"ssl_verify_cert": True, "ssl_verify_identity": verify_identity}


def _in_schema(cur: Any, view: str, name_column: str, table: str, name: str) -> bool:
    """Whether ``information_schema.<view>`` lists ``name`` for ``table`` here (MySQL has no IF NOT EXISTS for it)."""
    cur.execute(
        f"SELECT COUNT(*) FROM information_schema.{view} "
        f"WHERE table_schema = DATABASE() AND table_name = %s AND {name_column} = %s",
        (table, name),
    )
    return bool(cur.fetchone()[0])


def error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def lost_connection(exc: BaseException) -> bool:
    if isinstance(exc, pymysql.err.InterfaceError):
        return True  # PyMySQL's word for a connection it has already closed
    if isinstance(exc, OSError):
        return True
    return isinstance(exc, pymysql.MySQLError) and error_code(exc) in CONNECTION_LOST


def refused(exc: BaseException) -> bool:
    """The server refused the user, the database or the TLS handshake: no attempt will do better."""
    if error_code(exc) in REFUSALS:
        return True
    return tls.verification_error(getattr(exc, "original_exception", None)) is not None


def transient(exc: BaseException) -> bool:
    """Whether running the transaction again on a new connection can succeed."""
    if tls.verification_error(getattr(exc, "original_exception", None)) is not None:
        return False  # the server's certificate will not verify on the next attempt either
    return lost_connection(exc) or error_code(exc) in LOCK_CONFLICTS


def describe(exc: BaseException) -> str:
    code = error_code(exc)
    if isinstance(exc, pymysql.err.InterfaceError) and not code:
        return "the connection was closed"
    if code == CANNOT_CONNECT:
        failed = tls.failure(getattr(exc, "original_exception", None))
        if failed is not None and failed.startswith("TLS verification"):
            return f"{failed} (check the URL's ssl_ca, and its host against the certificate's names)"
        if failed is not None:
            return failed
    if code is not None and len(exc.args) > 1:
        return f"error {code}: {str(exc.args[1])[:500]}"
    return f"{type(exc).__name__}: {str(exc)[:500]}"


def scalar(conn: Connection, statement: str, args: tuple) -> Any:
    with conn.cursor() as cur:
        cur.execute(statement, args)
        return cur.fetchone()[0]
