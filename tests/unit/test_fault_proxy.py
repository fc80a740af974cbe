"""The TCP fault proxy of the hanging tests (tests/support/faultproxy.py), in front of an echo server of its own."""
from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.net import HOST


class Echo:
    """A TCP echo server on a thread: each connection gets back what it sends, until it closes."""

    def __init__(self):
        self.server = socket.create_server((HOST, 0))
        self.port = self.server.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    @staticmethod
    def _echo(conn):
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self):
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept (closing alone does not, on Linux)
        self.server.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self.accepting.join(5)
        for t in self.threads:
            t.join(5)


@pytest.fixture
def echo():
    server = Echo()
    yield server
    server.close()


@pytest.fixture
def proxy(echo):
    p = FaultProxy((HOST, echo.port))
    yield p
    p.close()


def connect(proxy, timeout=2.0) -> socket.socket:
    return socket.create_connection((HOST, proxy.port), timeout=timeout)


def roundtrip(sock, data=b"ping") -> bytes:
    sock.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def silent(sock, wait=0.3) -> bool:
    """Nothing comes back within ``wait`` seconds, and the connection is not closed either."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b"x"  # b"" is a FIN: not silent
    except TimeoutError:
        return True
    finally:
        sock.settimeout(2.0)


def test_passes_both_ways_and_a_client_close_reaches_the_service(proxy, echo):
    with connect(proxy) as sock:
        assert roundtrip(sock, b"hello" * 50_000) == b"hello" * 50_000
    with connect(proxy) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1) == b""  # the echo server saw the FIN and closed in turn
    time.sleep(0.05)
    assert proxy.accepted == 2 and proxy.connections() == 0


def test_blackhole_stalls_open_connections_holds_their_data_and_silences_new_ones(proxy):
    with connect(proxy) as old:
        assert roundtrip(old) == b"ping"
        proxy.blackhole()
        old.sendall(b"held")
        assert silent(old)
        with connect(proxy) as new:  # accepted, read, never answered
            new.sendall(b"anyone?")
            assert silent(new)
            proxy.passing()
            assert old.recv(4) == b"held"  # nothing was lost, as TCP would have it
            assert silent(new)  # never forwarded, whatever the mode now
        assert roundtrip(old) == b"ping"
    assert proxy.silenced == 1


def test_unreachable_leaves_a_connect_unanswered_until_it_times_out(proxy):
    with connect(proxy) as old:
        proxy.unreachable()
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            connect(proxy, timeout=0.5)
        assert 0.4 < time.monotonic() - start < 2
        assert silent(old)
        proxy.passing()
        with connect(proxy) as new:
            assert roundtrip(new) == b"ping"
        assert roundtrip(old) == b"ping"


def test_refuse_new_resets_new_connections_and_keeps_open_ones(proxy):
    with connect(proxy) as old:
        proxy.refuse_new()
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            with connect(proxy) as new:  # the reset may come before connect returns, or after
                new.sendall(b"x")
                new.recv(1)
        assert roundtrip(old) == b"ping"
        assert proxy.refused == 1


def test_delay_adds_the_delay_each_way(proxy):
    with connect(proxy) as sock:
        proxy.delay(150)
        start = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert 0.29 < time.monotonic() - start < 1.5
        proxy.passing()
        start = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert time.monotonic() - start < 0.2


def test_cut_resets_open_connections(proxy):
    with connect(proxy) as sock:
        assert roundtrip(sock) == b"ping"
        assert proxy.cut() == 1
        with pytest.raises(ConnectionResetError):
            sock.recv(1)


def test_close_ends_its_thread_and_every_connection(echo):
    proxy = FaultProxy((HOST, echo.port))
    sock = connect(proxy)
    proxy.blackhole()
    proxy.close()
    assert sock.recv(1) == b""
    sock.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fault-proxy")]
    proxy.close()  # again: nothing to do
    with pytest.raises(RuntimeError, match="closed"):
        proxy.passing()


def test_an_unknown_mode_is_refused(proxy):
    with pytest.raises(ValueError, match="unknown mode"):
        proxy.set_mode("lossy")
