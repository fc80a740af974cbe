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
    """The night a run belongs to: the id of its first run, which a rerun's id starts with."""
    return run_id.split(RERUN_MARK, 1)[0]


@dataclasses.dataclass
class PlanContext:
    """Given to a phase's planner: the run, its params and read access to the tables.

    Intermediate data belongs to the run that wrote it: a handler keys what
    it writes by ``output_run`` (``output_key``) and reads the previous
    phase's output under ``input_run`` (``input_prefix``). In a run they are
    the same; in a rerun, ``input_run`` of the first phase it runs is the run
    that last completed the phase before.
    """

    job: str
    run: str
    tables: ReadTables
    params: Mapping[str, str]
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    phase: str = ""
    phases: Sequence[str] = ()  # the job's phases, in order
    reads: Mapping[str, str] = dataclasses.field(default_factory=dict)  # phase -> run whose output of it is read

    @property
    def output_run(self) -> str:
        """The generation this run writes: key every intermediate row it writes by this."""
        return self.run

    @property
    def input_run(self) -> str:
        """The generation of the previous phase's output, which this phase reads."""
        position = list(self.phases).index(self.phase) if self.phase in self.phases else 0
        return self.generation(self.phases[position - 1]) if position > 0 else self.run

    def generation(self, phase: str) -> str:
        """The run whose output of ``phase`` this run reads: itself, unless it is a rerun that skips ``phase``."""
        return self.reads.get(phase, self.run)

    def output_key(self, *parts: Any) -> str:
        """An intermediate row key of this run's generation: ``<output_run>/<part>/<part>...``."""
        return "/".join([self.output_run, *map(str, parts)])

    def input_prefix(self, *parts: Any, phase: str | None = None) -> bytes:
        """The key prefix of the previous phase's (or ``phase``'s) rows under ``parts``, ending in ``/``."""
        run = self.input_run if phase is None else self.generation(phase)
        return ("/".join([run, *map(str, parts)]) + "/").encode()

    @property
    def source_run(self) -> str:
        raise AttributeError("ctx.source_run is gone: key what a stage writes by ctx.output_run (ctx.output_key) "
                             "and read the previous phase's output under ctx.input_run (ctx.input_prefix); "
                             "see Generations in the README")


@dataclasses.dataclass
class Context(PlanContext):
    """Given to every handler call.

    ``slice``: the message's identity among the messages of its chunk and
    stage (its ``seq``): ``0`` for a chunk's first, ``0+1``, ``0+2``... for
    the slices that continue it, ``0+2:1`` for part 1 of a split rest
    (``swarm.slices``). Key a slice's partial rows by its chunk and this.
    """

    log: logging.Logger = dataclasses.field(default_factory=lambda: logging.getLogger("swarm.handler"))
    slice: str = "0"
