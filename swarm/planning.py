"""Planners' helpers: a phase's chunks from a source table's regions.

A chunk that stays inside one region is read from one region server, and
regions are HBase's unit of size (a region splits when it grows), so a plan
that follows them spreads the work as the data is spread::

    from swarm.planning import region_chunks

    @job.planner("map")
    def plan(ctx):
        return region_chunks(ctx.tables, EVENTS, prefix=f"{ctx.params['date']}/".encode(),
                             chunks=ctx.options.get("chunks", 32))

Each chunk's payload holds ``start`` and ``stop`` (bytes; ``b""`` is an open
end), ready for ``ctx.tables.scan(table, start, stop)``.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol

from swarm.keyrange import HEX, region_ranges
from swarm.stage import Chunk


class HasRegions(Protocol):
    """What ``region_chunks`` reads: ``ctx.tables`` in a planner, or a table store."""

    def regions(self, name: str) -> list[tuple[bytes, bytes]]: ...


def region_chunks(
    tables: HasRegions,
    table: str,
    *,
    prefix: bytes | str | None = None,
    start: bytes | str = b"",
    stop: bytes | str = b"",
    per_region: int | None = None,
    chunks: int | None = None,
    alphabet: bytes = HEX,
    payload: Mapping[str, Any] | None = None,
    name: str = "r",
) -> list[Chunk]:
    """Chunks covering ``table``'s keys with ``prefix`` (or in ``[start, stop)``), cut at its regions' boundaries.

    The regions are read when the planner runs: a table the operator
    pre-split, or that HBase split as it grew, is planned by its regions of
    that night. Within each region's part of the range, uniform cuts make
    smaller chunks:

    - ``chunks=n``: ``n`` chunks in all, shared among the regions' parts in
      proportion to their width (at least one each, so more than ``n`` when
      the range crosses more regions);
    - ``per_region=k``: ``k`` chunks for each region's part;
    - neither: one chunk per region's part.

    Uniform cuts assume the key bytes after ``prefix`` (or after the common
    prefix of ``start`` and ``stop``) are spread evenly over ``alphabet``:
    hex digits by default, as hashed or salted keys are; pass
    ``swarm.keyrange.BYTES`` for binary keys, or the characters your keys
    use. A part too narrow to cut stays one chunk.

    Chunk ids are ``name`` and a number (``r00000``, ``r00001``...) in key
    order; each payload is ``payload`` plus ``start`` and ``stop``.
    """
    ranges = region_ranges(
        tables.regions(table), _bytes(start), _bytes(stop),
        prefix=None if prefix is None else _bytes(prefix), per_region=per_region,
        chunks=None if chunks is None else int(chunks), alphabet=alphabet,
    )
    extra = dict(payload or {})
    return [Chunk(f"{name}{i:05d}", {**extra, "start": low, "stop": high}) for i, (low, high) in enumerate(ranges)]


def _bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)
