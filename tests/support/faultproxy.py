"""A TCP fault proxy on loopback, in front of a real service, for the network faults a test cannot make otherwise.

Where network namespaces are not at hand, it stands between a client and a service
(``FaultProxy((host, port))``, then point the client at ``proxy.port``) and fails the
network between them in one of these modes, switched at run time:

``pass``         forward both ways (the start).
``blackhole``    a host that stops answering: connections open now stall, their data held
                 where it is (as TCP holds it while packets are lost: nothing is dropped, and
                 it flows on if the mode ends); a new connection is accepted and its bytes read,
                 but nothing is forwarded and nothing answers. No FIN, no RST.
``unreachable``  as ``blackhole``, and a new connection is not even accepted: its SYN goes
                 unanswered (the listening socket's accept queue is kept full), so a client's
                 connect waits for its own connect timeout.
``refuse-new``   connections open now go on; a new one is reset at once.
``delay``        forward both ways, each byte ``delay_ms`` late in each direction.

A mode change is in force when ``set_mode`` (or ``passing``, ``blackhole``...) returns: from
then on nothing moves as the old mode would have had it. Connections accepted while
black-holing stay silent for good, whatever the mode later: they were never forwarded.

One thread serves every socket of a proxy (non-blocking, with ``selectors``); ``close``
closes them all and joins it, and raises what failed in it, if anything did.
"""
from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import struct
import threading
import time
from typing import Any, Callable

from tests.support.net import HOST

PASS, BLACKHOLE, UNREACHABLE, REFUSE_NEW, DELAY = "pass", "blackhole", "unreachable", "refuse-new", "delay"
MODES = (PASS, BLACKHOLE, UNREACHABLE, REFUSE_NEW, DELAY)
STALLED = (BLACKHOLE, UNREACHABLE)  # modes in which open connections move nothing

CHUNK = 65536
HELD_MAX = 4 * 1024 * 1024  # bytes held for one side before the proxy stops reading from the other
UPSTREAM_CONNECT_TIMEOUT = 2.0  # the service is on this machine: it answers at once or is down
BACKLOG = 128
TICK = 1.0  # the longest the loop sleeps without being woken


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with an RST rather than a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class _Link:
    """A client's connection and the proxy's own to the service, with what waits to be written to each."""

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client, self.upstream = client, upstream
        # per socket: (when it is due, bytes) to write to it, in order
        self.held: dict[socket.socket, collections.deque[tuple[float, bytes]]] = {
            client: collections.deque(), upstream: collections.deque()}
        self.ended: set[socket.socket] = set()  # sockets that sent their FIN
        self.shut: set[socket.socket] = set()  # sockets the proxy has sent a FIN to
        self.handler: Callable[[socket.socket, int], None] | None = None  # its sockets' selector callback

    def peer(self, sock: socket.socket) -> socket.socket:
        return self.upstream if sock is self.client else self.client

    def held_bytes(self, sock: socket.socket) -> int:
        return sum(len(data) for _, data in self.held[sock])

    def done(self) -> bool:
        return len(self.shut) == 2


class FaultProxy:
    """A TCP proxy from ``bind:port`` to ``target`` whose network can fail on demand (see the module).

    ``bind`` is loopback unless a test wants it on an address of its own (a veth's, say).
    """

    def __init__(self, target: tuple[str, int], name: str = "fault-proxy", bind: str = HOST):
        self.target = target
        self.host = bind
        self._listener = socket.create_server((bind, 0), backlog=BACKLOG)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0  # connections accepted and forwarded
        self.silenced = 0  # connections accepted while black-holing (never forwarded)
        self.refused = 0  # connections reset at once (refuse-new, or the service down)
        self._links: list[_Link] = []
        self._silent: list[socket.socket] = []
        self._filler: socket.socket | None = None  # keeps the accept queue full while unreachable
        self._sel = selectors.DefaultSelector()
        self._registered: dict[socket.socket, int] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._sel.register(self._listener, selectors.EVENT_READ)
        self._registered[self._listener] = selectors.EVENT_READ
        self._cv = threading.Condition()
        self._wanted: tuple[str, float] = (PASS, 0.0)  # (mode, delay in seconds), as last asked
        self._asked = 0  # how many changes were asked, and how many the loop has put in force
        self._applied = 0
        self._mode, self._delay = PASS, 0.0  # what the loop goes by
        self._cuts = 0
        self._closing = False
        self._stopped = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{name}-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        return self._wanted[0]

    # switching --------------------------------------------------------------------------

    def set_mode(self, mode: str, delay_ms: float = 0.0) -> None:
        """Put ``mode`` in force (``delay_ms`` for ``delay``); returns once it is."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}")
        if delay_ms < 0 or (mode != DELAY and delay_ms):
            raise ValueError("delay_ms: a number of milliseconds >= 0, for mode delay only")
        with self._cv:
            self._wanted = (mode, delay_ms / 1000.0)
            self._asked += 1
            self._await_loop(self._asked)

    def passing(self) -> None:
        self.set_mode(PASS)

    def blackhole(self) -> None:
        self.set_mode(BLACKHOLE)

    def unreachable(self) -> None:
        self.set_mode(UNREACHABLE)

    def refuse_new(self) -> None:
        self.set_mode(REFUSE_NEW)

    def delay(self, ms: float) -> None:
        self.set_mode(DELAY, ms)

    def cut(self) -> int:
        """Reset every connection open now, as a failed network would; returns how many."""
        with self._cv:
            count = self.connections()
            self._cuts += 1
            self._asked += 1
            self._await_loop(self._asked)
        return count

    def connections(self) -> int:
        """Connections open through the proxy now, forwarded or silenced."""
        return len(self._links) + len(self._silent)

    def _await_loop(self, asked: int) -> None:
        """With ``_cv`` held: wake the loop and wait until it has handled request number ``asked``."""
        if self._stopped:
            raise RuntimeError(f"fault proxy on {self.address} is closed") from self._error
        self._wake_w.send(b"x")
        if not self._cv.wait_for(lambda: self._applied >= asked or self._stopped, timeout=10):
            raise RuntimeError(f"fault proxy on {self.address}: its loop did not answer within 10 s")
        if self._applied < asked:
            raise RuntimeError(f"fault proxy on {self.address} stopped") from self._error

    # closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every socket and end the thread; raises what failed in the thread, if anything did."""
        with self._cv:
            self._closing = True
            if not self._stopped:
                with contextlib.suppress(OSError):
                    self._wake_w.send(b"x")
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError(f"fault proxy on {self.address}: its thread did not end")
        self._wake_w.close()
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"fault proxy on {self.address} failed: {error!r}") from error

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - kept for close() to raise on the test's thread
            self._error = exc
        finally:
            self._teardown()
            with self._cv:
                self._stopped = True
                self._cv.notify_all()

    def _serve(self) -> None:
        while True:
            if self._take_requests():
                return
            now = time.monotonic()
            for link in list(self._links):
                self._flush(link, now)
            timeout = self._update_interest(time.monotonic())
            for key, events in self._sel.select(timeout):
                handler: Callable[[socket.socket, int], None] | None = key.data
                sock: Any = key.fileobj
                if sock is self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        sock.recv(CHUNK)
                elif sock is self._listener:
                    self._accept()
                elif handler is not None:
                    handler(sock, events)

    def _take_requests(self) -> bool:
        """Put in force what was asked since the last pass; True when the proxy is closing."""
        with self._cv:
            if self._closing:
                return True
            if self._applied == self._asked:
                return False
            mode, delay = self._wanted
            cuts, self._cuts = self._cuts, 0
            asked = self._asked
        if cuts:
            for link in list(self._links):
                self._drop(link, reset=True)
            for sock in list(self._silent):
                self._drop_silent(sock, reset=True)
        if (mode == UNREACHABLE) != (self._mode == UNREACHABLE):
            self._fill_backlog() if mode == UNREACHABLE else self._empty_backlog()
        self._mode, self._delay = mode, delay
        with self._cv:
            self._applied = asked
            self._cv.notify_all()
        return False

    def _fill_backlog(self) -> None:
        """Stop accepting and fill the accept queue: the kernel answers no new SYN from now on."""
        self._unregister(self._listener)
        self._listener.listen(0)  # one queued connection fills it
        if self._filler is not None:
            return  # the last one is still queued, not accepted yet
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect((self.host, self.port))
        self._filler = filler  # never registered: nobody reads it

    def _empty_backlog(self) -> None:
        self._listener.listen(BACKLOG)
        self._want(self._listener, selectors.EVENT_READ, None)
        # the filler waits in the accept queue: dropped when accepted (see _accept)

    def _teardown(self) -> None:
        for link in list(self._links):
            self._drop(link, reset=False)
        for sock in list(self._silent):
            self._drop_silent(sock, reset=False)
        if self._filler is not None:
            self._filler.close()
        self._sel.close()
        self._listener.close()
        self._wake_r.close()

    # accepting --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # a connection reset while queued, say: the next one is still there
            if self._filler is not None and peer == self._filler.getsockname():
                client.close()
                self._filler.close()
                self._filler = None
                continue
            client.setblocking(False)
            if self._mode in STALLED:
                self.silenced += 1
                self._silent.append(client)
                self._want(client, selectors.EVENT_READ, self._on_silent)
            elif self._mode == REFUSE_NEW:
                self.refused += 1
                _reset(client)
            else:
                self._forward(client)

    def _forward(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=UPSTREAM_CONNECT_TIMEOUT)
        except OSError:
            self.refused += 1
            _reset(client)  # as the service itself would answer a connect while it is down
            return
        upstream.setblocking(False)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle: latency as without the proxy
        self.accepted += 1
        link = _Link(client, upstream)
        link.handler = lambda sock, events: self._on_link(link, sock, events)
        self._links.append(link)

    # forwarding -------------------------------------------------------------------------

    def _update_interest(self, now: float) -> float:
        """Register each socket for what it should wait for; the seconds until held data falls due."""
        timeout = TICK
        for link in self._links:
            for sock in (link.client, link.upstream):
                events = 0
                if self._mode not in STALLED:
                    peer = link.peer(sock)
                    if sock not in link.ended and peer not in link.shut and link.held_bytes(peer) < HELD_MAX:
                        events |= selectors.EVENT_READ
                    if link.held[sock]:
                        due = link.held[sock][0][0]
                        if due <= now:
                            events |= selectors.EVENT_WRITE
                        else:
                            timeout = min(timeout, due - now)
                self._want(sock, events, link.handler)
        return max(0.0, timeout)

    def _on_link(self, link: _Link, sock: socket.socket, events: int) -> None:
        if link not in self._links:
            return  # dropped earlier in this pass
        if events & selectors.EVENT_READ:
            try:
                data = sock.recv(CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self._drop(link, reset=True)  # reset by one side: the other sees it reset too
                return
            if data == b"":
                link.ended.add(sock)
            elif data:
                link.held[link.peer(sock)].append((time.monotonic() + self._delay, data))
        self._flush(link, time.monotonic())

    def _flush(self, link: _Link, now: float) -> None:
        """Write what is due to each side; pass a FIN on once all before it is written; drop a finished link."""
        if self._mode in STALLED:
            return
        for sock in (link.client, link.upstream):
            queue = link.held[sock]
            try:
                while queue and queue[0][0] <= now:
                    due, data = queue[0]
                    sent = sock.send(data)
                    if sent < len(data):
                        queue[0] = (due, data[sent:])
                        break
                    queue.popleft()
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(link, reset=True)
                return
            if link.peer(sock) in link.ended and not queue and sock not in link.shut:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)
                link.shut.add(sock)
        if link.done():
            self._drop(link, reset=False)

    def _on_silent(self, sock: socket.socket, events: int) -> None:
        """A connection accepted while black-holing: read and forget, until it ends."""
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_silent(sock, reset=False)

    # sockets ------------------------------------------------------------------------------

    def _want(self, sock: socket.socket, events: int, data: Any) -> None:
        had = self._registered.get(sock)
        if events == 0:
            if had is not None:
                self._unregister(sock)
        elif had is None:
            self._sel.register(sock, events, data)
            self._registered[sock] = events
        elif had != events:
            self._sel.modify(sock, events, data)
            self._registered[sock] = events

    def _unregister(self, sock: socket.socket) -> None:
        if self._registered.pop(sock, None) is not None:
            self._sel.unregister(sock)

    def _drop(self, link: _Link, reset: bool) -> None:
        if link in self._links:
            self._links.remove(link)
        for sock in (link.client, link.upstream):
            self._unregister(sock)
            _reset(sock) if reset else sock.close()

    def _drop_silent(self, sock: socket.socket, reset: bool) -> None:
        if sock in self._silent:
            self._silent.remove(sock)
        self._unregister(sock)
        _reset(sock) if reset else sock.close()
