"""What a handler or a planner is given: the run it works for and read access to the tables."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator, Mapping, Sequence

from swarm.table import Row, TableStore


class ReadTables:
    """Read-only view of the table store: handlers write only through effects."""

    def __init__(self, store: TableStore):
        self._store = store

    def scan(self, name: str, start: bytes = b"", stop: bytes = b"", prefix: bytes | None = None,
             columns: Sequence[bytes] | None = None, batch_size: int = 1000) -> Iterator[Row]:
        return self._store.scan(name, start, stop, prefix, columns, batch_size)

    def row(self, name: str, key: bytes, columns: Sequence[bytes] | None = None) -> dict[bytes, bytes]:
        return self._store.row(name, key, columns)

    def regions(self, name: str) -> list[tuple[bytes, bytes]]:
        return self._store.regions(name)


RERUN_MARK = "+r"  # a rerun's id is ``<source run>+r<N>``


def params_of(run_id: str) -> dict[str, str]:
    """The params a run id was made from: ``job@a=1,b=2#tag+r1`` -> ``{"a": "1", "b": "2"}``."""
    _, _, rest = source_of(run_id).partition("@")
    rest = rest.split("#", 1)[0]
    return dict(p.split("=", 1) for p in rest.split(",") if "=" in p)


def source_of(run_id: str) -> str:
    """The run whose intermediate data a run reads: itself, or for a rerun the run it reruns."""
    return run_id.split(RERUN_MARK, 1)[0]


@dataclasses.dataclass
class PlanContext:
    """Given to a phase's planner: the run, its params and read access to the tables."""

    job: str
    run: str
    tables: ReadTables
    params: Mapping[str, str]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def source_run(self) -> str:
        """Key intermediate data by this, not ``run``: a rerun of a later stage reads what its source wrote."""
        return source_of(self.run)


@dataclasses.dataclass
class Context(PlanContext):
    """Given to every handler call."""

    log: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("swarm.handler"))
