"""The table-store role: HBase-shaped ordered tables (rows, families, qualifiers)."""
from __future__ import annotations

import abc
from typing import Iterable, Iterator, Sequence

from swarm.effects import Delete, Put, normalized

Row = tuple[bytes, dict[bytes, bytes]]


class TableStore(abc.ABC):
    """Rows sorted by key bytes; cells named ``b"family:qualifier"``.

    Implementations: ``swarm.tables.embedded`` (the embedded default) and
    ``swarm.tables.hbase`` (HBase through happybase). All methods may be
    called from several threads at once.
    """

    @abc.abstractmethod
    def create_table(self, name: str, families: Iterable[str], splits: Iterable[bytes] = ()) -> None:
        """Create ``name`` pre-split at ``splits``; a no-op if it exists."""

    @abc.abstractmethod
    def drop_table(self, name: str) -> None:
        """Delete ``name`` and its rows; a no-op if it does not exist."""

    @abc.abstractmethod
    def tables(self) -> list[str]:
        """Names of the existing tables."""

    @abc.abstractmethod
    def regions(self, name: str) -> list[tuple[bytes, bytes]]:
        """Region key ranges ``(start, end)`` in order; ``b""`` is an open end."""

    @abc.abstractmethod
    def scan(
        self,
        name: str,
        start: bytes = b"",
        stop: bytes = b"",
        prefix: bytes | None = None,
        columns: Sequence[bytes] | None = None,
        batch_size: int = 1000,
    ) -> Iterator[Row]:
        """Rows with ``start <= key < stop`` (``b""`` = open) or with ``prefix``, in key order.

        Reads in batches of ``batch_size`` and resumes after the last key
        seen, so a long scan survives a scanner time-out.
        """

    @abc.abstractmethod
    def row(self, name: str, key: bytes, columns: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
        """The latest cells of one row (empty if absent)."""

    def apply(self, mutations: Sequence[Put | Delete]) -> None:
        """Apply puts and deletes; durable when this returns.

        Every value is normalised here, the one way into a store, so no
        caller can write a cell that later reads cannot take back. A table or
        column family that does not exist is a ``TableError``. Atomic per row
        only, like HBase: callers write idempotently.
        """
        self._apply(normalized(mutations))

    @abc.abstractmethod
    def _apply(self, mutations: Sequence[Put | Delete]) -> None:
        """Apply mutations already normalised."""

    def close(self) -> None:  # noqa: B027 - a store holding no connection has nothing to release
        """Release connections."""


def apply_in_batches(tables: TableStore, mutations: Iterable[Put | Delete], size: int = 1000) -> int:
    """Apply ``mutations`` ``size`` at a time, so that a long stream never sits whole in memory; how many."""
    batch: list[Put | Delete] = []
    done = 0
    for m in mutations:
        batch.append(m)
        if len(batch) >= size:
            tables.apply(batch)
            done, batch = done + len(batch), []
    if batch:
        tables.apply(batch)
    return done + len(batch)


def prefix_stop(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (b"" if none)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return b""
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
