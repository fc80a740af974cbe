"""Prometheus metrics of workers and the master (exposed by ``serve_metrics``)."""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

MESSAGES = Counter("swarm_messages_total", "Messages handled, by outcome", ["job", "stage", "outcome"])
PUBLISHED = Counter("swarm_published_total", "Next-stage messages published", ["job", "stage"])
HANDLER_SECONDS = Histogram("swarm_handler_seconds", "Handler call latency", ["job", "stage"])
HANDLER_ERRORS = Counter("swarm_handler_errors_total", "Handler faults and aborts", ["job", "stage", "kind"])
RETRIES = Counter("swarm_retries_total", "Messages scheduled for a retry", ["job", "stage"])
DEAD_LETTERS = Counter("swarm_dead_letters_total", "Messages dead-lettered", ["job", "stage"])
BUSY = Gauge("swarm_pool_busy", "Busy handler threads", ["job", "stage"])
POOL_LIMIT = Gauge("swarm_pool_limit", "Threads a stage may run at once, as its controller set", ["job", "stage"])
QUEUE_DEPTH = Gauge("swarm_queue_depth", "Messages waiting, as last seen", ["queue"])
CHUNKS = Gauge("swarm_master_messages", "Messages of the current run by state", ["run", "phase", "state"])


def serve_metrics(port: int | None, addr: str = "0.0.0.0") -> int | None:
    """Expose ``/metrics`` on ``port`` (0 = any free port, None = do not expose); returns the bound port."""
    if port is None or port < 0:
        return None
    server, _ = start_http_server(port, addr=addr)
    return server.server_port
