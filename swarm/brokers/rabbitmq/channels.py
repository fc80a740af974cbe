"""What publishing and consuming need of a connection, as a Protocol: they work on one without importing it.

``connection.Connection`` is the one implementation; it owns a publisher
and its consumers' channels, so they cannot import it back.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import pika.channel

from swarm.errors import BackendError


class Channels(Protocol):
    label: str  # the broker's URL with its password hidden, for log lines
    blocked: str | None  # while a resource alarm blocks the connection: the broker's reason
    blocked_wait: float  # seconds a publish waits, parked, while the connection is blocked

    def call_later(self, seconds: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the pumping thread once ``seconds`` have passed (if the connection is still up)."""

    def channel(self) -> pika.channel.Channel:
        """A new open channel on the connection."""

    def request(self, ch: pika.channel.Channel, start: Callable[[Callable[..., None]], Any], what: str) -> tuple:
        """Start a request on ``ch`` and pump the connection until its callback; the callback's arguments."""

    def pump_until(self, done: Callable[[], bool], timeout: float | None = -1) -> None:
        """Pump the connection's I/O until ``done()``."""

    def error(self, text: str, kind: type[BackendError] = BackendError) -> BackendError:
        """An error about this connection, its password hidden."""
