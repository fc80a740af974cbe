"""The fleet page's data: each host's supervisord processes, each stage's pool from the workers' metrics.

Every call is bounded: a host that does not answer within ``TIMEOUT`` is
shown as not answering, and the page goes on with the others.
"""
from __future__ import annotations

import concurrent.futures
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from prometheus_client.parser import text_string_to_metric_families

from swarm.urls import redact

TIMEOUT = 5.0  # seconds a host has to answer
MAX_METRICS_BYTES = 4 * 1024 * 1024
POOL_METRICS = {"swarm_pool_busy": "busy", "swarm_pool_limit": "limit"}
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="console-fleet")


@dataclass
class Host:
    """One supervisord: its processes (name, group, state, pid, uptime) or why it could not be read."""

    url: str  # redacted
    processes: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""


@dataclass
class Pools:
    """One worker's pools from its /metrics: (job, stage) -> {"busy": n, "limit": n}."""

    url: str  # redacted
    stages: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    error: str = ""


def hosts(urls: Sequence[str], timeout: float = TIMEOUT) -> list[Host]:
    return _each(urls, _host, lambda url, err: Host(redact(url), error=err), timeout)


def pools(urls: Sequence[str], timeout: float = TIMEOUT) -> list[Pools]:
    return _each(urls, lambda url: _pools(url, timeout), lambda url, err: Pools(redact(url), error=err), timeout)


def _each(urls: Sequence[str], read: Callable[[str], Any], failed: Callable[[str, str], Any], timeout: float) -> list:
    """``read(url)`` for every URL at once, each within ``timeout``; ``failed(url, why)`` for one that did not."""
    futures = [(url, _POOL.submit(read, url)) for url in urls]
    out = []
    for url, future in futures:
        try:
            out.append(future.result(timeout=timeout))
        except concurrent.futures.TimeoutError:
            out.append(failed(url, f"no answer within {timeout:.0f} s"))
        except Exception as exc:  # noqa: BLE001 - a host's failure is shown on its line, never the page's
            out.append(failed(url, redact(str(exc)) or type(exc).__name__))
    return out


def _host(url: str) -> Host:
    from swarm.autoscale import Supervisor

    infos = Supervisor(url, group="").all_processes()
    processes = [{"name": f"{p['group']}:{p['name']}", "state": p["statename"], "pid": p["pid"],
                  "description": p["description"]} for p in infos]
    return Host(redact(url), sorted(processes, key=lambda p: p["name"]))


def _pools(url: str, timeout: float) -> Pools:
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - an operator's configured URL
        text = answer.read(MAX_METRICS_BYTES).decode("utf-8", "replace")
    return Pools(redact(url), parse_pools(text))


def parse_pools(text: str) -> dict[tuple[str, str], dict[str, float]]:
    """``swarm_pool_busy`` and ``swarm_pool_limit`` by (job, stage), from a Prometheus exposition."""
    stages: dict[tuple[str, str], dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        key = POOL_METRICS.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            labels = sample.labels
            stages.setdefault((labels.get("job", ""), labels.get("stage", "")), {})[key] = sample.value
    return stages
