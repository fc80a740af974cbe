"""The development server's network side: a threaded Thrift server on TCP, one thread per client.

For tests and local development only; it is a stand-in for HBase's Thrift
server, never a production store.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from typing import Any, Callable, Protocol, Sequence

from thriftpy2.protocol import TBinaryProtocolFactory, TCompactProtocolFactory
from thriftpy2.transport import TBufferedTransportFactory, TFramedTransportFactory, TSocket, TTransportException

from swarm.hbase_dev.handler import HBaseHandler
from swarm.hbase_dev.processor import MultiServiceProcessor
from swarm.hbase_dev.scanners import ScannerRegistry
from swarm.tables import thrift as idl
from swarm.tables.embedded import EmbeddedTables

log = logging.getLogger(__name__)


# thriftpy2's factories share no base class; these say what the server uses of them.
class _TransportFactory(Protocol):
    def get_transport(self, trans: Any) -> Any: ...


class _ProtocolFactory(Protocol):
    def get_protocol(self, trans: Any) -> Any: ...


TRANSPORTS: dict[str, Callable[[], _TransportFactory]] = {
    "buffered": TBufferedTransportFactory, "framed": TFramedTransportFactory,
}
PROTOCOLS: dict[str, Callable[[], _ProtocolFactory]] = {
    "binary": TBinaryProtocolFactory, "compact": TCompactProtocolFactory,
}
_ACCEPT_POLL = 0.5  # seconds; stop() also wakes accept() directly where the OS allows


class DevServer:
    """An HBase Thrift(1) server on ``EmbeddedTables``: a development and test stand-in, never a production store.

    ``start()`` opens the store at ``path`` (``":memory:"`` keeps nothing
    after ``stop()``), binds ``host:port`` (port 0 picks a free one) and
    returns the bound port. ``stop()`` drops every client connection and open
    scanner and closes the store, as a crash of the Thrift server would;
    ``start()`` again serves the same data on the same port. Scanners left
    idle longer than ``scanner_lease`` seconds time out, like HBase's.
    ``transport`` and ``protocol`` must match the clients' (happybase's
    defaults: buffered, binary). With ``extensions=False`` the server answers
    only ``Hbase.thrift``, as a real HBase Thrift server does (for testing
    clients' fallbacks).
    """

    def __init__(
        self,
        path: str = ":memory:",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        scanner_lease: float = 60.0,
        transport: str = "buffered",
        protocol: str = "binary",
        extensions: bool = True,
    ):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.path = path
        self.host = host
        self.scanner_lease = scanner_lease
        self.transport = transport
        self.protocol = protocol
        self.extensions = extensions
        self._port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._store: EmbeddedTables | None = None
        self._scanners: ScannerRegistry | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._listener is not None

    @property
    def url(self) -> str:
        """The ``tables`` URL that reaches this server through ``HBaseTables``."""
        query = ""
        if (self.transport, self.protocol) != ("buffered", "binary"):
            query = f"?transport={self.transport}&protocol={self.protocol}"
        return f"hbase://{self.host}:{self._port}{query}"

    def start(self) -> int:
        with self._lock:
            if self._listener is not None:
                raise RuntimeError(f"the HBase development server already listens on {self.host}:{self._port}")
            store = EmbeddedTables(self.path)
            try:
                listener = _listen(self.host, self._port)
            except OSError:
                store.close()
                raise
            self._port = listener.getsockname()[1]
            self._store, self._scanners = store, ScannerRegistry(self.scanner_lease)
            handler = HBaseHandler(store, self._scanners, self.host, self._port)
            services = (idl.hbase.Hbase, idl.dev.HbaseDev) if self.extensions else (idl.hbase.Hbase,)
            processor = MultiServiceProcessor(handler, *services)
            self._listener = listener
            self._acceptor = threading.Thread(
                target=self._accept, args=(listener, processor), name=f"hbase-dev-{self._port}", daemon=True
            )
            self._acceptor.start()
        log.info(
            "HBase development server (a test stand-in, not a production store) on %s:%d, data %s",
            self.host, self._port, self.path,
        )
        return self._port

    def stop(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is None:
            return
        _shut(listener)
        listener.close()
        if self._acceptor is not None:
            self._acceptor.join()
        with self._lock:
            clients = dict(self._clients)
        for sock in clients:
            _shut(sock)
        for thread in clients.values():
            thread.join(timeout=5)
        if self._scanners is not None:
            self._scanners.clear()
        if self._store is not None:
            self._store.close()
        log.info("HBase development server on %s:%d stopped", self.host, self._port)

    def expire_scanners(self) -> int:
        """End the lease of every idle scanner now (for tests); how many ended."""
        return self._scanners.expire_all() if self._scanners is not None else 0

    def open_scanners(self) -> int:
        return len(self._scanners) if self._scanners is not None else 0

    def __enter__(self) -> "DevServer":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # connections ------------------------------------------------------------

    def _accept(self, listener: socket.socket, processor: MultiServiceProcessor) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed by stop()
            with self._lock:
                if self._listener is not listener:
                    conn.close()
                    return
                thread = threading.Thread(target=self._serve_client, args=(conn, processor), daemon=True)
                self._clients[conn] = thread
            thread.start()

    def _serve_client(self, conn: socket.socket, processor: MultiServiceProcessor) -> None:
        conn.settimeout(None)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        trans = TRANSPORTS[self.transport]().get_transport(TSocket(sock=conn))
        proto = PROTOCOLS[self.protocol]().get_protocol(trans)
        try:
            while True:
                processor.process(proto, proto)
        except (TTransportException, OSError):
            pass  # the client went away, or stop() cut the connection
        except Exception:
            log.exception("dropping a client of the HBase development server after a protocol error")
        finally:
            try:
                trans.close()
            except OSError:
                pass
            with self._lock:
                self._clients.pop(conn, None)


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server bind its port again at once; not SO_REUSEPORT, which would let two share it.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL)
    except OSError:
        listener.close()
        raise
    return listener


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve(
    host: str,
    port: int,
    path: str,
    *,
    scanner_lease: float = 60.0,
    transport: str = "buffered",
    protocol: str = "binary",
) -> None:
    """Run the development server in the foreground until SIGINT or SIGTERM."""
    server = DevServer(path, host, port, scanner_lease=scanner_lease, transport=transport, protocol=protocol)
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``swarm hbase-dev``: serve the HBase development server (a test stand-in, never a production store)."""
    parser = argparse.ArgumentParser(
        prog="swarm hbase-dev",
        description="HBase-Thrift-compatible server for tests and local development; not a production store.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; it has no auth)")
    parser.add_argument("--port", type=int, default=9090, help="TCP port (default 9090, 0 = any free port)")
    parser.add_argument("--data", default=":memory:", help="SQLite file for the tables (default: in memory)")
    parser.add_argument(
        "--scanner-timeout", type=float, default=60.0, metavar="SECONDS",
        help="idle time after which a scanner's lease ends (default 60, as HBase)",
    )
    parser.add_argument("--transport", choices=sorted(TRANSPORTS), default="buffered")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="binary")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(
        args.host, args.port, args.data,
        scanner_lease=args.scanner_timeout, transport=args.transport, protocol=args.protocol,
    )
    return 0
