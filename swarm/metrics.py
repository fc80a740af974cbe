"""Prometheus metrics of workers and the master, and their health endpoints (``serve_metrics``).

One small HTTP server per process: ``/metrics`` (Prometheus), ``/healthz``
(the process answers) and ``/readyz`` (its backends answer); any other path
is 404. A readiness check never hangs the request: each backend probe runs
on a thread of its own with a short deadline, and the answer is kept for a
moment, so a scraper polling hard costs the backends little.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

MESSAGES = Counter("swarm_messages_total", "Messages handled, by outcome", ["job", "stage", "outcome"])
PUBLISHED = Counter("swarm_published_total", "Next-stage messages published", ["job", "stage"])
HANDLER_SECONDS = Histogram("swarm_handler_seconds", "Handler call latency", ["job", "stage"])
CLAIM_SECONDS = Histogram("swarm_claim_seconds", "Ledger claim of a batch", ["job", "stage"])
COMMIT_SECONDS = Histogram("swarm_commit_seconds", "Commit of a batch: table writes, ledger, confirmed publish",
                           ["job", "stage"])
HANDLER_ERRORS = Counter("swarm_handler_errors_total", "Handler faults and aborts", ["job", "stage", "kind"])
QUEUE_FULL = Counter("swarm_queue_full_total", "Refusals by a full bounded stage queue (each offer refused counts)",
                     ["job", "stage"])
RETRIES = Counter("swarm_retries_total", "Messages scheduled for a retry", ["job", "stage"])
DEAD_LETTERS = Counter("swarm_dead_letters_total", "Messages dead-lettered", ["job", "stage"])
BUSY = Gauge("swarm_pool_busy", "Busy handler threads", ["job", "stage"])
POOL_LIMIT = Gauge("swarm_pool_limit", "Threads a stage may run at once, as its controller set", ["job", "stage"])
QUEUE_DEPTH = Gauge("swarm_queue_depth", "Messages waiting, as last seen", ["queue"])
CHUNKS = Gauge("swarm_master_messages", "Messages of the current run by state", ["run", "phase", "state"])

log = logging.getLogger("swarm.metrics")

PROBE_TIMEOUT = 2.0  # seconds a backend has to answer a readiness probe
READY_TTL = 1.5  # seconds a readiness answer is reused
MAX_REASON = 300  # characters of a probe's error shown
_URL_PASSWORD = re.compile(r"(\w[\w+.-]*://[^/\s:@]*:)[^@\s/]*@")

Probe = Callable[[], object]  # returns when the backend answered; raises when it did not


@dataclasses.dataclass(frozen=True)
class Readiness:
    """The answer of one readiness check: ``failed`` maps each probe that failed to why."""

    names: tuple[str, ...]
    failed: Mapping[str, str]

    @property
    def ready(self) -> bool:
        return not self.failed

    def text(self) -> str:
        return "".join(f"{name}: {self.failed.get(name, 'ok')}\n" for name in self.names)


class _Probe:
    """One named probe; at most one call in flight, so a hung backend does not pile up threads."""

    def __init__(self, name: str, fn: Probe):
        self.name, self.fn = name, fn
        self._lock = threading.Lock()
        self._running = False

    def start(self) -> tuple[threading.Event, list[str | None]] | None:
        """Run the probe on a thread; None while the previous call has not returned."""
        with self._lock:
            if self._running:
                return None
            self._running = True
        done = threading.Event()
        result: list[str | None] = []
        threading.Thread(target=self._run, args=(done, result), name=f"swarm-readyz-{self.name}",
                         daemon=True).start()
        return done, result

    def _run(self, done: threading.Event, result: list[str | None]) -> None:
        try:
            self.fn()
            result.append(None)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready, and says why
            result.append(str(exc) or type(exc).__name__)
        finally:
            with self._lock:
                self._running = False
            done.set()


class ReadinessCheck:
    """Runs named probes at once, each with ``timeout``; keeps the answer ``ttl`` seconds."""

    def __init__(self, probes: Mapping[str, Probe], timeout: float = PROBE_TIMEOUT, ttl: float = READY_TTL,
                 secrets: Iterable[str] = (), clock: Callable[[], float] = time.monotonic):
        self.probes = [_Probe(name, fn) for name, fn in probes.items()]
        self.timeout, self.ttl, self.clock = timeout, ttl, clock
        self.secrets = [s for s in secrets if s]
        self._lock = threading.Lock()  # concurrent requests share one check
        self._last: tuple[float, Readiness] | None = None

    def __call__(self) -> Readiness:
        with self._lock:
            if self._last is not None and self.clock() - self._last[0] < self.ttl:
                return self._last[1]
            answer = self._check()
            self._last = (self.clock(), answer)
            return answer

    def _check(self) -> Readiness:
        started = {p.name: p.start() for p in self.probes}
        deadline = time.monotonic() + self.timeout
        failed = {}
        for name, call in started.items():
            if call is None:
                failed[name] = f"no answer yet to the previous check (over {self.timeout:g} s)"
                continue
            done, result = call
            if not done.wait(max(0.0, deadline - time.monotonic())):
                failed[name] = f"no answer within {self.timeout:g} s"
            elif result[0] is not None:
                failed[name] = self._redact(result[0])
        return Readiness(tuple(started), failed)

    def _redact(self, text: str) -> str:
        """``text`` with URL passwords and the process's own secrets hidden, on one line, cut short."""
        text = _URL_PASSWORD.sub(r"\1***@", text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        text = " ".join(text.split())
        return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def backend_probes(broker: Any, ledger: Any, tables: Any, queue: str) -> dict[str, Probe]:
    """The cheapest call that needs each backend to answer: a queue's depth, the schema version, the table list."""

    def ledger_probe() -> None:
        if ledger.schema_version() is None:
            raise LookupError("the ledger has no Swarm schema: `swarm db init` makes it")

    return {"broker": lambda: broker.depth(queue, delayed=False), "ledger": ledger_probe, "tables": tables.tables}


def url_passwords(urls: Iterable[str]) -> list[str]:
    """The passwords in ``urls``, as written and decoded: what a probe's error must never show."""
    found = []
    for url in urls:
        try:
            password = urllib.parse.urlsplit(url).password
        except ValueError:
            continue
        if password:
            found += [password, urllib.parse.unquote(password)]
    return found


def serve_metrics(port: int | None, addr: str = "127.0.0.1",
                  ready: Callable[[], Readiness] | None = None) -> int | None:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr``:``port`` from a daemon thread.

    ``port`` 0 takes any free port, None serves nothing; returns the bound
    port. ``ready`` is the readiness check (a ``ReadinessCheck``); without
    one, ``/readyz`` answers as ``/healthz`` does.
    """
    if port is None or port < 0:
        return None
    handler = type("SwarmMetricsHandler", (_Handler,), {"ready": staticmethod(ready) if ready else None})
    server = ThreadingHTTPServer((addr, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="swarm-metrics", daemon=True).start()
    return server.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    ready: Callable[[], Readiness] | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b"ok\n")
        elif path == "/readyz":
            self._readyz()
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _readyz(self) -> None:
        if self.ready is None:
            self._send(200, b"ok\n")
            return
        answer = self.ready()
        self._send(200 if answer.ready else 503, answer.text().encode())

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        # Scrapes every few seconds would drown the process's own log.
        log.debug("%s " + format, self.address_string(), *args)
