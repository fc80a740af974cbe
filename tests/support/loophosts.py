"""Test hosts on loopback, for the network suite where network namespaces cannot be made.

A ``LoopHost`` has the face of ``tests.support.nethosts.Host`` that the suite uses, made of
fault proxies only: each service port it asks for gets a ``FaultProxy`` on ``127.0.0.1``,
its processes run here as any other, a partition black-holes its proxies (both ways: a
proxy cannot drop one direction only) and a delay delays them. It fails the connections
of one host's processes, not its packets: no loss, no half-open links, no unanswered SYN
but a proxy's ``unreachable`` mode.
"""
from __future__ import annotations

from typing import Iterable

from tests.support.faultproxy import FaultProxy
from tests.support.net import HOST
from tests.support.nethosts import DIRECTIONS, Unsupported


class LoopHost:
    """One host's connections to the services, through proxies of its own."""

    DROPPED = "connections stalled"  # what ``dropped`` counts
    ONE_WAY = False  # can ``partition`` drop one direction only

    command: list[str] = []  # its processes run as they are

    def __init__(self, name: str):
        self.name = name
        self.forwarders: dict[int, FaultProxy] = {}
        self._cut: set[int] = set()
        self._delay_ms = 0.0

    def forward(self, port: int) -> tuple[str, int]:
        if port not in self.forwarders:
            self.forwarders[port] = FaultProxy((HOST, port), name=f"{self.name}-{port}")
        return self.service(port)

    def service(self, port: int) -> tuple[str, int]:
        return HOST, self.forwarders[port].port

    def delay(self, ms: float, jitter_ms: float = 0, loss_pct: float = 0, reorder_pct: float = 0) -> None:
        if jitter_ms or loss_pct or reorder_pct:
            raise Unsupported("a fault proxy delays its connections; it cannot lose, jitter or reorder packets")
        self._delay_ms = ms
        self._apply()

    def clear(self) -> None:
        self._delay_ms = 0.0
        self._apply()

    def partition(self, port: int | None = None, direction: str = "both") -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: one of {', '.join(DIRECTIONS)}")
        if direction != "both":
            raise Unsupported("a fault proxy black-holes both directions of a connection, not one")
        self._cut |= set(self.forwarders) if port is None else {port}
        self._apply()

    def dropped(self) -> dict[str, int]:
        """Connections stalled in the partition now (a proxy counts no packets)."""
        return {"out": sum(self.forwarders[port].connections() for port in self._cut), "in": 0}

    def heal(self) -> None:
        self._cut.clear()
        self._apply()

    def _apply(self) -> None:
        for port, proxy in self.forwarders.items():
            if port in self._cut:
                proxy.blackhole()
            elif self._delay_ms:
                proxy.delay(self._delay_ms)
            else:
                proxy.passing()

    def close(self) -> None:
        for proxy in self.forwarders.values():
            proxy.close()


class LoopHosts:
    """``LoopHost``\\ s made with ``add``, as ``NetHosts`` makes namespaces; ``close`` closes their proxies."""

    kind = "loopback fault proxies"

    def __init__(self) -> None:
        self.hosts: dict[str, LoopHost] = {}

    def add(self, name: str, ports: Iterable[int] = ()) -> LoopHost:
        host = self.hosts[name] = LoopHost(name)
        for port in ports:
            host.forward(port)
        return host

    def __getitem__(self, name: str) -> LoopHost:
        return self.hosts[name]

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()
        self.hosts.clear()
