"""The table store on HBase through happybase's Thrift client: ``hbase://host:9090?option=value&...``.

Several Thrift servers of the same HBase: ``hbase://thrift1:9090,thrift2:9090?...`` (a server's port
defaults to 9090). Calls go to the first. When a call's connection breaks and the server refuses a
new one (or breaks twice in one call), the call is retried through the next server (round robin,
with the backoff below), and the store stays there until that one fails in turn. A server that
takes a new connection is tried once more first: it may only have dropped an idle one.

URL options (all optional):

- ``pool_size`` (10): connections in happybase's pool, the most calls in flight at once.
- ``timeout_ms`` (60000): socket timeout of each call; 0 waits forever.
- ``table_prefix`` (none): table ``t`` is ``<prefix>_t`` in HBase; ``tables()`` lists only those.
- ``transport`` (``buffered``) / ``protocol`` (``binary``): must match the Thrift server
  (``framed`` for HBase's ``-hsha``/``-nonblocking`` servers; ``compact`` if it runs ``-c``).
- ``retries`` (8), ``backoff`` (0.1 s), ``backoff_max`` (5 s): a call that fails on a broken
  connection (server restart, socket error, time-out) is retried up to ``retries`` times, waiting
  ``backoff`` doubling up to ``backoff_max`` (with jitter) in between, each time through the next
  server when the URL names several; then ``BackendError``.

happybase's pool replaces a connection that failed and re-raises: this store is the caller that
retries. Every call is idempotent, so retrying one that may have landed is safe: ``apply`` only
puts and deletes fixed bytes, never increments.

Scans read in bounded batches: each batch is one short-lived scanner that starts just after the
last row key seen. No scanner outlives a batch, so a slow consumer cannot lose a scanner lease;
a batch whose scanner or connection is lost anyway is read again from the same key.

Pre-split tables: HBase's Thrift1 API cannot create a table with split keys. ``create_table``
with ``splits`` uses the ``createTableWithSplits`` call of Swarm's development server
(``swarm.hbase_dev``); a real HBase Thrift server does not know it, so on HBase the table is
created with one region and a warning says so: there, tables are pre-split by the operator in the
HBase shell (``create 't', 'f', SPLITS => ['k1', 'k2']``) before the first run, and
``create_table`` leaves an existing table as it is.

Order within ``apply``: HBase's ``mutateRows`` applies all puts of a call before its deletes, so
a put that follows a delete of the same row goes in a later call, sent 2 ms after the delete's
answer: HBase hides a put behind a delete of the same cell with the same millisecond timestamp.
Handlers that rewrite a row should still rather put the new cells than delete and re-put them.
"""
from __future__ import annotations

import functools
import logging
import queue
import random
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import happybase
import Hbase_thrift  # registered by happybase: the IDL module its client raises from
from happybase.connection import THRIFT_PROTOCOLS, THRIFT_TRANSPORTS
from thriftpy2.protocol.exc import TProtocolException
from thriftpy2.thrift import TApplicationException, TClient, TException
from thriftpy2.transport import TTransportException

from swarm.effects import Delete, Put, to_bytes
from swarm.errors import BackendError, ConfigError, TableError
from swarm.table import Row, TableStore, prefix_stop
from swarm.tables import thrift as idl
from swarm.urls import DEFAULT_PORTS, clean_credentials, redact, server_name, split_servers

log = logging.getLogger(__name__)
T = TypeVar("T")

# A broken or timed-out connection: the pool has replaced it, the call may be retried.
_CONNECTION_ERRORS = (TTransportException, TProtocolException, socket.error, EOFError)
# What happybase's pool reconnects after (and re-raises).
_RECONNECTED = (TException, socket.error)
# An answer from the server: retrying would get the same answer.
_SERVER_ERRORS = (
    Hbase_thrift.IOError, Hbase_thrift.IllegalArgument, Hbase_thrift.AlreadyExists,
    idl.dev.IOError, idl.dev.IllegalArgument, idl.dev.AlreadyExists, TApplicationException,
)
# How HBase says a scanner is gone (lease expired, region moved, Thrift server restarted).
_SCANNER_LOST = (
    "ScannerTimeoutException", "UnknownScannerException", "OutOfOrderScannerNextException",
    "LeaseException", "scanner ID is invalid",
)

DEFAULT_PORT = DEFAULT_PORTS["hbase"]
_DEFAULTS = {
    "pool_size": "10", "timeout_ms": "60000", "table_prefix": "", "transport": "buffered",
    "protocol": "binary", "retries": "8", "backoff": "0.1", "backoff_max": "5",
}


class HBaseTables(TableStore):
    """HBase tables through a happybase connection pool; safe for many threads."""

    def __init__(self, url: str):
        self._url = redact(url)
        self.servers, options = _parse_url(url)
        self._query = urllib.parse.urlsplit(url).query
        self.host, self.port = self.servers[0]  # the first server, where calls go until it fails
        self.where = ",".join(server_name(host, port) for host, port in self.servers)
        self.pool_size = _number(options, "pool_size", int, url, minimum=1)
        self.timeout_ms = _number(options, "timeout_ms", int, url, minimum=0)
        self.prefix = options["table_prefix"]
        self.transport = _choice(options, "transport", THRIFT_TRANSPORTS, url)
        self.protocol = _choice(options, "protocol", THRIFT_PROTOCOLS, url)
        self.retries = _number(options, "retries", int, url, minimum=0)
        self.backoff = _number(options, "backoff", float, url, minimum=0)
        self.backoff_max = _number(options, "backoff_max", float, url, minimum=0)
        self._pool: happybase.ConnectionPool | None = None
        self._server = 0  # the index in ``servers`` of the server the pool connects to
        self._lock = threading.Lock()
        self._connections: set[happybase.Connection] = set()
        self._closed = False

    # tables -----------------------------------------------------------------

    def create_table(self, name: str, families: Iterable[str], splits: Iterable[bytes] = ()) -> None:
        full = self._full(name)
        fams = sorted({f.rstrip(":") for f in families})
        cuts = sorted({bytes(s) for s in splits if s})

        def create(conn: happybase.Connection) -> None:
            if full.encode() in conn.tables():
                return
            if cuts and self._create_presplit(conn, full, fams, cuts):
                return
            try:
                conn.create_table(full, {f: {} for f in fams})
            except Hbase_thrift.AlreadyExists:
                pass  # created meanwhile by someone else

        self._call(f"create table {full}", create)

    def _create_presplit(self, conn: happybase.Connection, full: str, fams: list[str], cuts: list[bytes]) -> bool:
        """Create through the development server's extension; False if the server is a real HBase."""
        proto = THRIFT_PROTOCOLS[self.protocol](conn.transport, decode_response=False)
        try:
            TClient(idl.dev.HbaseDev, proto).createTableWithSplits(full.encode(), [f.encode() for f in fams], cuts)
        except idl.dev.AlreadyExists:
            pass
        except TApplicationException as exc:
            if exc.type != TApplicationException.UNKNOWN_METHOD:
                raise
            log.warning(
                "HBase's Thrift API cannot pre-split: creating %s with one region instead of %d. "
                "Pre-split it in the HBase shell before the first run: create '%s', %s, SPLITS => [%s]",
                full, len(cuts) + 1, full, ", ".join(f"'{f}'" for f in fams), ", ".join(map(_shell_string, cuts)),
            )
            return False
        return True

    def drop_table(self, name: str) -> None:
        full = self._full(name)

        def drop(conn: happybase.Connection) -> None:
            if full.encode() not in conn.tables():
                return
            if conn.is_table_enabled(full):
                conn.disable_table(full)
            conn.delete_table(full)

        self._call(f"drop table {full}", drop)

    def tables(self) -> list[str]:
        names = self._call("list tables", lambda conn: conn.tables())
        head = f"{self.prefix}_".encode() if self.prefix else b""
        return sorted(n[len(head):].decode() for n in names if n.startswith(head))

    def regions(self, name: str) -> list[tuple[bytes, bytes]]:
        full = self._full(name)
        found = self._call(f"regions of {full}", lambda conn: conn.table(full).regions())
        if not found:  # HBase answers no regions for a missing table
            raise TableError(f"table {name!r} does not exist in HBase at {self.where}")
        return sorted((r["start_key"] or b"", r["end_key"] or b"") for r in found)

    def each_server(self, timeout_ms: int) -> dict[str, list[str] | Exception]:
        """Each server asked once, on its own, for the table list: the names, or why it did not answer."""
        answers: dict[str, list[str] | Exception] = {}
        for host, port in self.servers:
            single = HBaseTables(f"hbase://{server_name(host, port)}?{self._query}")
            single.retries, single.timeout_ms = 0, timeout_ms
            try:
                answers[server_name(host, port)] = single.tables()
            except BackendError as exc:
                answers[server_name(host, port)] = exc
            finally:
                single.close()
        return answers

    # reads ------------------------------------------------------------------

    def scan(
        self,
        name: str,
        start: bytes = b"",
        stop: bytes = b"",
        prefix: bytes | None = None,
        columns: Sequence[bytes] | None = None,
        batch_size: int = 1000,
    ) -> Iterator[Row]:
        if prefix is not None:
            start, stop = prefix, prefix_stop(prefix)
        full, cols, size = self._full(name), _thrift_columns(columns), max(1, int(batch_size))
        if start and stop and start >= stop:
            # HBase reads a scan whose start equals its stop as a get of that row: nothing to read here.
            self._call(f"scan {full}", lambda conn: _check_table(conn, full))
            return
        cursor = start
        while True:
            read = functools.partial(_scan_batch, full=full, start=cursor, stop=stop, columns=cols, size=size)
            rows = self._call(f"scan {full}", read, retry_if=_scanner_lost)
            yield from rows
            if len(rows) < size:
                return
            cursor = rows[-1][0] + b"\x00"  # the smallest key after the last one seen

    def row(self, name: str, key: bytes, columns: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
        full, cols = self._full(name), _thrift_columns(columns)
        return self._call(f"read {full}", lambda conn: conn.table(full).row(key, columns=cols))

    # writes -----------------------------------------------------------------

    def _apply(self, mutations: Sequence[Put | Delete]) -> None:
        for i, segment in enumerate(_segments(list(mutations))):
            if i:
                # This segment puts to a row the last one deleted from. HBase stamps both with its
                # clock in milliseconds and a delete hides a put of the same millisecond: let it tick.
                time.sleep(0.002)
            for table, group in _by_table(segment).items():
                full = self._full(table)
                try:
                    self._call(f"write to {full}", functools.partial(_send, full=full, mutations=group))
                except TableError:
                    raise
                except BackendError:
                    # HBase's batch error for a missing table does not name the cause ("Failed 1 action:
                    # t: 1 time, servers with issues: null"): ask whether the table is there.
                    if self._exists(full) is False:
                        raise TableError(f"HBase at {self.where}: write to {full}: "
                                         f"TableNotFoundException: {full}") from None
                    raise

    def _exists(self, full: str) -> bool | None:
        """Whether table ``full`` exists; None if HBase cannot say now."""
        try:
            return self._call("list tables", lambda conn: full.encode() in conn.tables())
        except BackendError:
            return None

    # plumbing ---------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, set()
            self._pool = None
        for conn in connections:
            conn.close()

    def _full(self, name: str) -> str:
        return f"{self.prefix}_{name}" if self.prefix else name

    def _call(
        self, what: str, fn: Callable[[happybase.Connection], T], retry_if: Callable[[Exception], bool] | None = None
    ) -> T:
        """``fn(connection)``, retried with backoff while the connection breaks; ``BackendError`` after that.

        A broken connection moves the store to the next server when the URL names several.
        """
        failure: Exception = BackendError("no attempt")
        struck: set[int] = set()  # servers whose connection broke in this call though they still took new ones
        for attempt in range(self.retries + 1):
            server = self._server
            try:
                answered, result = self._attempt(fn)
            except _Broken as broken:
                server, failure = broken.server, broken.cause
                # A server that takes a new connection may only have dropped an idle one (HBase's Thrift
                # server does after hbase.thrift.server.socket.read.timeout): it gets one more try.
                if not broken.reachable or server in struck:
                    self._failover(server)
                struck.add(server)
            else:
                if answered:
                    return result
                if retry_if is None or not retry_if(result):
                    kind = TableError if _missing(result) else BackendError  # waiting cannot create it
                    raise kind(f"HBase at {self.where}: {what}: {_message(result)}") from None
                failure = result
            if attempt < self.retries:
                through = f" through {server_name(*self.servers[self._server])}" if self._server != server else ""
                log.warning("HBase at %s: %s failed (%s); retrying%s", server_name(*self.servers[server]), what,
                            _message(failure), through)
                time.sleep(self._delay(attempt))
        raise BackendError(
            f"HBase at {self.where}: {what} failed {self.retries + 1} times, last: {_message(failure)}"
            f"{self._hint(failure)}"
        ) from None

    def _hint(self, failure: Exception) -> str:
        """What a connection closed at once may mean: a Thrift server speaking another transport or protocol."""
        if "read 0 bytes" not in _message(failure):
            return ""
        return (f" (the server closed the connection: if it does so at once, it may speak another transport or "
                f"protocol than this URL's transport={self.transport}, protocol={self.protocol})")

    def _attempt(self, fn: Callable[[happybase.Connection], T]) -> tuple[bool, Any]:
        """``(True, result)``, or ``(False, error)`` when the server answered with an error.

        A broken connection, or a server that cannot be reached, raises ``_Broken`` naming the server.
        """
        pool, server = self._get_pool()
        used: happybase.Connection | None = None
        broke: BaseException | None = None
        try:
            with pool.connection() as conn:
                used = conn
                self._remember(conn)
                try:
                    return True, fn(conn)
                except _SERVER_ERRORS as exc:
                    # An answer, so the connection is sound: handled here, the pool keeps it.
                    return False, exc
                except _CONNECTION_ERRORS as exc:
                    conn.close()  # the pool replaces a broken connection without closing its socket
                    broke = exc
                    raise
        except _CONNECTION_ERRORS as exc:
            # happybase's pool reconnects a connection that broke, then re-raises: the same error
            # means the server took the new connection, another one that it did not.
            reachable = exc is broke and isinstance(exc, _RECONNECTED)
            raise _Broken(server, exc, reachable) from None
        finally:
            if used is not None and pool is not self._pool:  # the store moved to another server meanwhile
                self._forget(used)

    def _get_pool(self) -> tuple[happybase.ConnectionPool, int]:
        with self._lock:
            if self._closed:
                raise BackendError(f"the HBase table store {self._url} is closed")
            if self._pool is None:
                # Connects once at creation: a server that is down fails here and the call is retried.
                host, port = self.servers[self._server]
                try:
                    self._pool = happybase.ConnectionPool(
                        self.pool_size, host=host, port=port, timeout=self.timeout_ms or None,
                        transport=self.transport, protocol=self.protocol,
                    )
                except _CONNECTION_ERRORS as exc:
                    raise _Broken(self._server, exc) from None
            return self._pool, self._server

    def _failover(self, server: int) -> None:
        """After a broken connection to ``server``: go on through the next one, if the URL names several.

        Only the first thread to see ``server`` fail moves the store on; the others find it moved.
        With one server, the pool stays: it has replaced the broken connection already.
        """
        if len(self.servers) == 1:
            return
        with self._lock:
            if self._server != server or self._closed:
                return
            retired, self._pool = self._pool, None
            self._server = (server + 1) % len(self.servers)
        if retired is not None:
            for conn in _idle_connections(retired):
                self._forget(conn)

    def _remember(self, conn: happybase.Connection) -> None:
        with self._lock:
            self._connections.add(conn)

    def _forget(self, conn: happybase.Connection) -> None:
        """Close a connection of a pool the store no longer uses."""
        with self._lock:
            self._connections.discard(conn)
        conn.close()

    def _delay(self, attempt: int) -> float:
        ceiling = min(self.backoff_max, self.backoff * (2**attempt))
        return ceiling * (0.5 + random.random() / 2)


# helpers -----------------------------------------------------------------------


class _Broken(Exception):
    """A connection to ``servers[server]`` broke, or could not be made: the call may be retried.

    ``reachable``: the server took a new connection after this one broke.
    """

    def __init__(self, server: int, cause: Exception, reachable: bool = False):
        super().__init__(server, cause)
        self.server, self.cause, self.reachable = server, cause, reachable


def _idle_connections(pool: happybase.ConnectionPool) -> list[happybase.Connection]:
    """The connections waiting in ``pool`` (happybase 1.3's pool keeps them in a queue)."""
    idle = []
    waiting = getattr(pool, "_queue", None)
    while waiting is not None:
        try:
            idle.append(waiting.get_nowait())
        except queue.Empty:
            break
    return idle


def _scan_batch(conn: happybase.Connection, full: str, start: bytes, stop: bytes, columns, size: int) -> list[Row]:
    """At most ``size`` rows from ``start`` on, through one scanner opened and closed here."""
    scanner = conn.table(full).scan(
        row_start=start or None, row_stop=stop or None, columns=columns, batch_size=size, limit=size
    )
    return list(scanner)


def _check_table(conn: happybase.Connection, full: str) -> None:
    """Raise HBase's own error if table ``full`` does not exist."""
    conn.client.getColumnDescriptors(full.encode())


def _send(conn: happybase.Connection, full: str, mutations: list[Put | Delete]) -> None:
    batch = conn.table(full).batch()
    for m in mutations:
        if isinstance(m, Put):
            batch.put(m.row, dict(m.cells))
        elif m.columns is None:
            batch.delete(m.row)
        else:
            # A name without ":" addresses no cell in Swarm (the embedded store deletes nothing
            # for it) but a whole family in HBase's Thrift API: leave it out.
            named = [c for c in map(to_bytes, m.columns) if b":" in c]  # normalised: to_bytes only tells the type
            batch.delete(m.row, columns=_thrift_columns(named) or [])
    batch.send()


def _segments(mutations: list[Put | Delete]) -> list[list[Put | Delete]]:
    """Split where a put follows a delete of the same row: one call applies its puts first."""
    segments: list[list[Put | Delete]] = []
    current: list[Put | Delete] = []
    deleted: set[tuple[str, bytes]] = set()
    for m in mutations:
        key = (m.table, to_bytes(m.row))
        if isinstance(m, Put) and key in deleted:
            segments.append(current)
            current, deleted = [], set()
        current.append(m)
        if isinstance(m, Delete):
            deleted.add(key)
    if current:
        segments.append(current)
    return segments


def _by_table(mutations: list[Put | Delete]) -> dict[str, list[Put | Delete]]:
    out: dict[str, list[Put | Delete]] = {}
    for m in mutations:
        out.setdefault(m.table, []).append(m)
    return out


def _thrift_columns(columns: Sequence[bytes] | None) -> list[bytes] | None:
    """Swarm's column names in HBase's Thrift terms: ``b"f:"`` (a family here) is ``b"f"`` there."""
    if not columns:
        return None
    return [c[:-1] if c.endswith(b":") else c for c in columns]


def _shell_string(key: bytes) -> str:
    """``key`` as a double-quoted string of the HBase (JRuby) shell."""
    printable = range(0x20, 0x7F)
    return '"' + "".join(chr(b) if b in printable and b not in b'"\\#' else f"\\x{b:02x}" for b in key) + '"'


def _scanner_lost(exc: Exception) -> bool:
    text = _message(exc)
    return any(marker in text for marker in _SCANNER_LOST)


_MISSING = ("TableNotFoundException", "NoSuchColumnFamilyException")


def _missing(exc: BaseException) -> bool:
    """HBase's answer that a table or column family does not exist."""
    return any(name in _message(exc) for name in _MISSING)


def _message(exc: BaseException) -> str:
    """The first line of a Thrift error's message (HBase sends whole Java stack traces)."""
    message: Any = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    if isinstance(message, bytes):
        message = message.decode("utf-8", errors="replace")
    lines = str(message).strip().splitlines() or [type(exc).__name__]
    return lines[0][:500]


# URL --------------------------------------------------------------------------


def _parse_url(url: str) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """The Thrift servers (host, port) the URL names, in order, and its options."""
    shown = redact(url)
    if not clean_credentials(url):
        raise ConfigError(f"tables: {shown}: the HBase Thrift client does not authenticate; remove the user")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"tables: {shown}: {exc}") from None
    if parts.scheme.lower() != "hbase":
        raise ConfigError(f"tables: expected hbase://host:port[,host:port...], got {shown}")
    _, at, hosts = parts.netloc.rpartition("@")
    if at:
        raise ConfigError(f"tables: {shown}: the HBase Thrift client does not authenticate; remove the user")
    if parts.path not in ("", "/"):
        raise ConfigError(f"tables: {shown}: unexpected path {parts.path!r}; options go in the query")
    try:
        servers = split_servers(hosts, DEFAULT_PORT) if hosts else [("localhost", DEFAULT_PORT)]
    except ValueError as exc:
        raise ConfigError(f"tables: {shown}: {exc}") from None
    options = dict(_DEFAULTS)
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in _DEFAULTS:
            raise ConfigError(f"tables: unknown option {key!r} in {shown}; known: {', '.join(_DEFAULTS)}")
        options[key] = value
    return servers, options


def _number(options: dict[str, str], key: str, kind: type, url: str, minimum: float) -> Any:
    try:
        value = kind(options[key])
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ConfigError(f"tables: option {key}={options[key]!r} in {redact(url)} must be a number >= {minimum}")
    return value


def _choice(options: dict[str, str], key: str, allowed: Iterable[str], url: str) -> str:
    if options[key] not in allowed:
        raise ConfigError(f"tables: option {key}={options[key]!r} in {redact(url)} must be one of {', '.join(allowed)}")
    return options[key]
