"""The local RabbitMQ of ``make services``: ``rabbitmqctl``, throwaway vhosts, URLs, queues, a TCP fault proxy;
and a node of a test's own, for what would disturb everyone else's (a resource alarm)."""
from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
import uuid
from typing import Iterable, Iterator

import pika

from tests.support.net import HOST, listening
from tests.support.tls import RABBIT_BIN, RabbitNode, program
from tests.support.waiting import wait_until

PORT = 5672
USER = PASSWORD = "guest"


def rabbitmqctl(*args: str, retry_for: float = 60.0) -> str:
    """Run ``rabbitmqctl`` and return its output, trying again for ``retry_for`` seconds.

    Other tests on the same broker restart it; a command run meanwhile fails and is retried.
    """
    if shutil.which("rabbitmqctl") is None:
        raise RuntimeError("rabbitmqctl is not installed: run `make services`")
    deadline = time.monotonic() + retry_for
    while True:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline:
            said = done.stderr.strip() or done.stdout.strip()
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {said}")
        time.sleep(1)


def await_broker(timeout: float = 90.0) -> None:
    """Wait until RabbitMQ listens: another test may be restarting it."""
    wait_until(lambda: listening(PORT), f"RabbitMQ to listen on {HOST}:{PORT} (`make services` starts it)",
               timeout=timeout, every=0.5)


@contextlib.contextmanager
def temporary_vhost(name: str | None = None) -> Iterator[str]:
    """A new vhost (``name``, or a new one) the guest user may use, deleted afterwards with everything in it."""
    await_broker()
    name = name or f"swarm-test-{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, USER, ".*", ".*", ".*")
        yield name
    finally:
        await_broker()
        rabbitmqctl("delete_vhost", name)


def amqp_url(vhost: str, port: int = PORT, password: str = PASSWORD, user: str = USER, **options: object) -> str:
    """``amqp://`` to ``vhost`` on the local RabbitMQ, as guest unless told; ``options`` go in the query."""
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"amqp://{user}:{password}@{HOST}:{port}/{vhost}" + (f"?{query}" if query else "")


def ready(vhost: str, queue: str) -> int:
    """Messages ready on ``queue`` now, asked over a connection of the test's own.

    (``rabbitmqctl list_queues`` reports quorum queues from metrics a few seconds old.)
    """
    params = pika.URLParameters(amqp_url(vhost))
    with contextlib.closing(pika.BlockingConnection(params)) as conn:
        return conn.channel().queue_declare(queue, passive=True).method.message_count


def queue_types(vhost: str) -> dict[str, str]:
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "type")
    return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)


class FaultProxy:
    """A TCP proxy in front of RabbitMQ that can cut its connections, or refuse new ones.

    A small stand-in for Toxiproxy: it lets a test break the network between a
    client and the broker without touching the broker.
    """

    def __init__(self, target: tuple[str, int] = (HOST, PORT)):
        self.target = target
        self.refusing = False
        self._server = socket.create_server((HOST, 0))
        self.port = self._server.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    def cut(self) -> int:
        """Drop every connection now open, as a failed network would; returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        return len(pairs)

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        self._closed = True
        self._server.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        sel = selectors.DefaultSelector()
        try:
            for sock in (a, b):
                sock.setblocking(True)
                sel.register(sock, selectors.EVENT_READ)
            while True:
                for key, _ in sel.select(timeout=0.5):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    peer[key.fileobj].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            sel.close()
            for sock in (a, b):
                sock.close()
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))


class OwnNode(RabbitNode):
    """A RabbitMQ node of the test's own on plain AMQP, beside the shared one (see ``tests.support.tls``).

    A resource alarm set on it (``alarm``) blocks the publishers of this
    node only, not those of every test on the machine.
    """

    def __init__(self, folder):
        super().__init__(folder, pki=None)
        self.name = self.name.replace("swarm-tls-", "swarm-own-")

    def url(self, host: str = HOST, password: str | None = None, **options: object) -> str:
        return amqp_url("%2F", port=self.port, user=self.user, password=password or self.password, **options)

    def _config(self) -> str:
        return (f"listeners.tcp.default = {HOST}:{self.port}\n"
                f"default_user = {self.user}\ndefault_pass = {self.password}\n")

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl -n <node> args``: its output."""
        ctl = program("rabbitmqctl", f"{RABBIT_BIN}/rabbitmqctl")
        env = dict(os.environ, HOME=str(self.folder / "home"))  # the node's Erlang cookie
        done = subprocess.run([ctl, "-n", self.name, *args], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    @contextlib.contextmanager
    def alarm(self) -> Iterator[None]:
        """A memory alarm for the block: the node blocks every connection that publishes, until it is over."""
        self.ctl("set_vm_memory_high_watermark", "0.000001")
        try:
            yield
        finally:
            self.ctl("set_vm_memory_high_watermark", "0.4")


class DepthSampler:
    """The most messages seen ready on each of some queues, sampled every ``every`` seconds on a thread."""

    def __init__(self, url: str, queues: Iterable[str], every: float = 0.02):
        self.url, self.queues, self.every = url, list(queues), every
        self.most = dict.fromkeys(self.queues, 0)
        self.empty = dict.fromkeys(self.queues, 0)  # samples that found the queue empty
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def __enter__(self) -> "DepthSampler":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with contextlib.closing(pika.BlockingConnection(pika.URLParameters(self.url))) as conn:
            ch = conn.channel()
            while not self._stop.is_set():
                for queue in self.queues:
                    ready = ch.queue_declare(queue, passive=True).method.message_count
                    self.most[queue] = max(self.most[queue], ready)
                    self.empty[queue] += ready == 0
                self.samples += 1
                ch.connection.sleep(self.every)
