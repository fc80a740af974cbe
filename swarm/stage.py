"""The plugin API: a job declares its stages, phases and planners."""
from __future__ import annotations

import dataclasses
import random
import re
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

from swarm import flow
from swarm.effects import Delete, Put, to_bytes
from swarm.envelope import _NAME, MAX_BODY_BYTES
from swarm.errors import PluginError
from swarm.keyrange import HEX

Handler = Callable[[Any, Any], Any]
_PARAM = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_FAMILY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
Validator = Callable[[Mapping[str, Any]], None]


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a stage retries a ``Fault``: exponential backoff with full jitter."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        cap = min(self.max_delay, self.base_delay * (2 ** max(0, attempt - 1)))
        return (rng or random).uniform(cap / 2, cap)


@dataclasses.dataclass(frozen=True)
class Ranges:
    """A stage whose payloads are key ranges of ``table``: ``start`` and ``stop``, bytes (``b""`` an open end).

    Declared with ``job.stage(..., ranges=TABLE)`` (or ``ranges=Ranges(TABLE,
    alphabet=...)``), it lets Swarm split the rest of a long range among idle
    threads at the end of a phase (``swarm.slices``). ``alphabet``: the bytes
    the keys use after their common prefix (hex digits by default;
    ``swarm.keyrange.BYTES`` for binary keys), for even cuts.
    """

    table: str
    alphabet: bytes = HEX


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage: a handler with its own bounded pool and failure policy."""

    name: str
    handler: Handler
    phase: str
    pool: int = 4  # most threads working at once; the controller moves between pool_min and pool
    prefetch: int | None = None  # defaults to pool x batch: every thread can take a full batch
    retry: Retry = Retry()
    timeout: float = 300.0
    next: tuple[str, ...] = ()
    validate: Validator | None = None
    max_body: int = MAX_BODY_BYTES
    batch: int = 1  # most deliveries a thread takes at once (only those already waiting)
    pool_min: int = 1
    ranges: Ranges | None = None  # its payloads are key ranges of a table: Swarm may split their rest
    max_queue: int | None = None  # most messages ready on its queue; publishers wait beyond (None: unbounded)

    @property
    def bound(self) -> int:
        """Most deliveries of this stage in a worker process at once (``swarm.flow``)."""
        return flow.bound(self.prefetch, self.pool, self.batch)


STAGED_SUFFIX = "_staged"  # a published table's staging area: ``<table>_staged``, rows ``<run>/<row>``


def staging_table(table: str) -> str:
    """Where writes to published table ``table`` wait, keyed by run, until the run's result is published."""
    return table + STAGED_SUFFIX


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """A table a job reads or writes: its column families and, optionally, the keys it is pre-split at.

    ``intermediate``: rows are keyed ``<run>/...`` by the run that wrote them
    (``ctx.output_key``), a generation each; ``swarm generations prune``
    removes old ones. ``published``: readers' table; writes go to its staging
    table and reach it only when the run's checks pass (``swarm.publishing``).
    """

    name: str
    families: tuple[str, ...]
    splits: tuple[bytes, ...] = ()
    intermediate: bool = False
    published: bool = False

    def family_of(self, column: bytes) -> str:
        return column.split(b":", 1)[0].decode(errors="replace")


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One unit of a phase's plan: becomes the root message of that chunk."""

    id: str
    payload: Mapping[str, Any]


Planner = Callable[[Any], Iterable[Chunk]]


class Job:
    """A nightly job: named stages grouped into phases separated by barriers.

    Phases run in the order their first stage is declared; a phase starts
    only when every message of the previous phase is done.
    """

    def __init__(self, name: str, params: Iterable[str] = ("date",), description: str = ""):
        _check_name("job", name)
        self.name = name
        self.params = tuple(params)
        self.description = description
        self.stages: dict[str, Stage] = {}
        self.planners: dict[str, Planner] = {}
        self.entries: dict[str, str] = {}  # phase -> entry stage
        self.tables: dict[str, TableSpec] = {}
        self.checks: dict[str, Any] = {}  # name -> swarm.checks.Check, run in declaration order
        # The bound of a stage queue whose stage declares none (``jobs.max_queue``; None: unbounded). Every
        # process of a site must see the same bounds: a queue's arguments are fixed when it is first declared.
        self.default_max_queue: int | None = None

    # declaration ---------------------------------------------------------

    def stage(
        self,
        name: str,
        *,
        phase: str = "main",
        pool: int = 4,
        prefetch: int | None = None,
        retry: Retry | None = None,
        timeout: float = 300.0,
        next: Iterable[str] = (),
        validate: Validator | None = None,
        entry: bool = False,
        max_body: int = MAX_BODY_BYTES,
        batch: int = 1,
        pool_min: int = 1,
        ranges: str | Ranges | None = None,
        max_queue: int | None = None,
    ) -> Callable[[Handler], Handler]:
        """Decorator declaring ``handler`` as stage ``name``.

        ``ranges``: the table whose key ranges its payloads are (``Ranges``), to let Swarm split their rest.
        ``max_queue``: the most messages that may wait ready on the stage's
        queue; a publisher that meets it full waits (see README, Bounded
        stages). None: as many as come, unless ``jobs.max_queue`` sets one.
        """

        def register(handler: Handler) -> Handler:
            stage = Stage(
                name, handler, phase, pool, prefetch, retry or Retry(), timeout, tuple(next), validate, max_body,
                batch, pool_min, Ranges(ranges) if isinstance(ranges, str) else ranges, max_queue,
            )
            self.add_stage(stage, entry=entry)
            return handler

        return register

    def add_stage(self, stage: Stage, entry: bool = False) -> None:
        _check_name("stage", stage.name)
        _check_name("phase", stage.phase)
        if stage.name in self.stages:
            raise PluginError(f"job {self.name}: stage {stage.name!r} declared twice")
        if stage.pool < 1 or stage.batch < 1 or not 1 <= stage.pool_min <= stage.pool:
            raise PluginError(f"job {self.name}: stage {stage.name}: need pool >= 1, batch >= 1, 1 <= pool_min <= pool")
        if stage.prefetch is not None and not 1 <= stage.prefetch <= stage.pool * stage.batch:
            raise PluginError(f"job {self.name}: stage {stage.name}: need 1 <= prefetch <= pool x batch")
        if stage.retry.max_attempts < 1:
            raise PluginError(f"job {self.name}: stage {stage.name}: retry.max_attempts must be >= 1")
        if stage.timeout <= 0:
            raise PluginError(f"job {self.name}: stage {stage.name}: timeout must be > 0")
        if stage.ranges is not None and (not isinstance(stage.ranges, Ranges) or len(set(stage.ranges.alphabet)) < 2):
            raise PluginError(f"job {self.name}: stage {stage.name}: ranges must name a table (or be a Ranges "
                              "with an alphabet of two bytes or more)")
        if stage.max_queue is not None and (isinstance(stage.max_queue, bool) or not isinstance(stage.max_queue, int)
                                            or stage.max_queue < 1):
            raise PluginError(f"job {self.name}: stage {stage.name}: max_queue must be a whole number >= 1 "
                              f"(or None: unbounded), got {stage.max_queue!r}")
        self.stages[stage.name] = stage
        if entry or stage.phase not in self.entries:
            self.entries[stage.phase] = stage.name
        with_handler = _OWNERS.setdefault(stage.handler, []) if _weakrefable(stage.handler) else []
        with_handler.append((self, stage.name))

    def table(self, name: str, families: Iterable[str], splits: Iterable[bytes | str] = (), *,
              intermediate: bool = False, published: bool = False) -> TableSpec:
        """Declare a table the job reads or writes; ``swarm tables create JOB`` makes them all.

        Once a job declares tables, its handlers may write only to those, and
        only to their families; its master refuses to start while one is missing.
        ``intermediate`` and ``published``: see ``TableSpec``; a published table
        brings its staging table, declared with it.
        """
        _check_name("table", name)
        families = tuple(families)
        if not families or any(not _FAMILY.match(f) for f in families):
            raise PluginError(f"job {self.name}: table {name!r} needs column families of [A-Za-z0-9_.-], "
                              f"got {list(families)}")
        if name in self.tables:
            raise PluginError(f"job {self.name}: table {name!r} declared twice")
        if intermediate and published:
            raise PluginError(f"job {self.name}: table {name!r} is either intermediate or published, not both")
        keys = tuple(sorted({s.encode() if isinstance(s, str) else bytes(s) for s in splits}))
        staged = staging_table(name)
        if published and staged in self.tables:
            raise PluginError(f"job {self.name}: table {staged!r}, the staging area of {name!r}, is declared already")
        self.tables[name] = spec = TableSpec(name, families, keys, intermediate, published)
        if published:
            self.tables[staged] = TableSpec(staged, families)
        return spec

    def check(self, check: Any) -> Any:
        """Declare a check of the run's result, run before it is published (``swarm.checks``).

        Takes a built-in (``checks.row_count(...)``) or decorates a function
        ``(result, history) -> CheckResult | bool``, named after it.
        """
        from swarm.checks import as_check

        made = as_check(check)
        if made.name in self.checks:
            raise PluginError(f"job {self.name}: check {made.name!r} declared twice")
        for table in made.tables:
            spec = self.tables.get(table)
            if spec is None or not spec.published:
                raise PluginError(f"job {self.name}: check {made.name!r} reads table {table!r}, which the job "
                                  "does not declare published=True: only a published table's result is checked")
        self.checks[made.name] = made
        return check

    def staged(self, run: str, mutations: Sequence[Put | Delete]) -> list[Put | Delete]:
        """``mutations`` as a worker applies them for ``run``: those to a published table go to its staging area."""
        published = {t.name for t in self.tables.values() if t.published}
        if not published:
            return list(mutations)
        return [dataclasses.replace(m, table=staging_table(m.table), row=f"{run}/".encode() + to_bytes(m.row))
                if m.table in published else m for m in mutations]

    def published_tables(self) -> list[TableSpec]:
        return [t for t in self.tables.values() if t.published]

    @property
    def publishes(self) -> bool:
        """Whether the job's result goes through checks and publication at the end of a run."""
        return bool(self.checks) or any(t.published for t in self.tables.values())

    def planner(self, phase: str) -> Callable[[Planner], Planner]:
        """Decorator declaring how phase ``phase`` is split into chunks."""

        def register(fn: Planner) -> Planner:
            self.planners[phase] = fn
            return fn

        return register

    # queries -------------------------------------------------------------

    @property
    def phases(self) -> list[str]:
        return list(self.entries)

    def max_queue(self, stage: str) -> int | None:
        """The bound of stage ``stage``'s queue: its own ``max_queue``, else the job's default; None: unbounded."""
        return self.stages[stage].max_queue or self.default_max_queue

    def verify(self) -> None:
        """Refuse a job whose declarations do not hold together."""
        for stage in self.stages.values():
            for target in stage.next:
                if target not in self.stages:
                    raise PluginError(f"job {self.name}: stage {stage.name} sends to unknown stage {target!r}")
                if self.stages[target].phase != stage.phase:
                    raise PluginError(
                        f"job {self.name}: stage {stage.name} sends to {target} in another phase; "
                        "phases are joined by barriers, not messages"
                    )
            if stage.ranges is not None and self.tables and stage.ranges.table not in self.tables:
                raise PluginError(f"job {self.name}: stage {stage.name} reads ranges of table "
                                  f"{stage.ranges.table!r}, which the job does not declare")
        for phase in self.phases:
            if phase not in self.planners:
                raise PluginError(f"job {self.name}: phase {phase!r} has no planner")

    def run_id(self, params: Mapping[str, Any]) -> str:
        """The deterministic id of a run of this job for ``params``."""
        missing = [p for p in self.params if p not in params]
        extra = [p for p in params if p not in self.params]
        if missing or extra:
            raise PluginError(
                f"job {self.name} takes params {list(self.params)}; missing {missing}, unexpected {extra}"
            )
        for key in self.params:
            if not _PARAM.match(str(params[key])):
                raise PluginError(f"job {self.name}: param {key}={params[key]!r} must be 1-64 of [A-Za-z0-9_.:-]")
        parts = ",".join(f"{k}={params[k]}" for k in self.params)
        run = f"{self.name}@{parts}" if parts else self.name
        _check_name("run", run)
        return run


# handler -> the (job, stage name) pairs that declared it: how ``swarm.testing.call`` finds a handler's stage.
_OWNERS: "weakref.WeakKeyDictionary[Handler, list[tuple[Job, str]]]" = weakref.WeakKeyDictionary()


def _weakrefable(obj: object) -> bool:
    try:
        weakref.ref(obj)
    except TypeError:
        return False
    return True


def stage_of(handler: Handler) -> tuple[Job, Stage] | None:
    """The job and stage that declared ``handler`` (the last to, if several did); None if none did."""
    owners = _OWNERS.get(handler) if _weakrefable(handler) else None
    if not owners:
        return None
    job, name = owners[-1]
    return job, job.stages[name]


def _check_name(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise PluginError(f"{kind} name {value!r} must be 1-128 characters of [A-Za-z0-9_.:@=,+#-]")
