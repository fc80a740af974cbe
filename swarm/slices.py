"""Slices: a long key range worked through a slice at a time, and its rest split among idle threads.

A handler that reads a key range (a payload with ``start`` and ``stop``,
bytes, ``b""`` an open end) takes it a slice at a time::

    from swarm.slices import slice_of

    @job.stage("scan", phase="map", ranges=EVENTS)
    def scan(ctx, msg):
        rows, rest = slice_of(ctx, EVENTS, msg.payload, rows=20_000)
        totals = fold(rows)
        puts = [Put(PARTIALS, ctx.output_key(key, f"{msg.chunk}.{ctx.slice}"), cells) for key, cells in totals]
        return [*puts, rest, Count("rows", len(rows))]

``rows`` are the range's first ``rows`` rows and ``rest`` a ``Continue`` of
the range after them (None when nothing is left). The runtime records the
rest as the next message of the same stage, in the same ledger call that
records this slice done, then publishes it: the slice's partial rows are
written, and the rest handed on, together. A worker killed in the middle
of a range loses at most the slice it was in, which its next delivery
writes again, over the same cells.

**The slice identity.** ``ctx.slice`` names the message among the slices of
its chunk: ``0`` for the chunk's first, ``0+1``, ``0+2``... for the slices
that follow, and ``<slice>:<i>`` for part ``i`` of a rest that was split
(below), whose own slices go on as ``0+7:2+1``... A message's identity is
fixed by where it came from, never by when it ran: key a slice's partial
rows by its chunk and ``ctx.slice`` and no two slices write the same row.

**Why slices are cut by row count, not by time.** A message that is
delivered again (its worker was killed after writing its rows, before the
ledger recorded it done) must write the same rows again, under the same
keys, and hand on the same rest. Cut by count, the slice is the first N rows
from ``start`` whenever it runs. Cut by time, the second delivery could stop
at another row: stopping earlier, it hands on a rest that starts inside what
the first delivery already wrote under this slice's keys, so those rows are
counted in this slice's partial rows and again in the next slice's; rows of
keys the second delivery no longer reaches stay as the first wrote them.
A time bound would be safe only if the cut were recorded, durably, before
any of the slice's rows are written, and every delivery read it back; N
rows is that cut, known in advance.

**Splitting.** Near the end of a phase a few long ranges can keep a thread
each busy while every other thread waits. With ``[split] enabled``, when a
phase has at most ``tail`` open messages (planned, queued or claimed) and a
splittable stage's queue has none ready, the rest of a range is cut into
``ways`` sub-ranges at even keys (``swarm.keyrange.range_cuts``), provided
it holds about ``min_rows`` rows or more: estimated, not counted (a rest
from the density of the slice before it, a waiting range from small reads
at 64 places in it). Two places do it, each on a range no worker has
started, so nothing is ever run twice:

- the worker, when a slice hands on its rest: the ``ways`` parts are
  recorded, instead of one rest, with the slice done (``HandOn``);
- the master's watch loop, for a range message queued and never claimed
  (``master.splitting``): in one ledger transaction, only if it is still so,
  the message is marked done with the parts as its children; a worker that
  later receives it finds it done and skips it.

A stage opts in by declaring its ranges' table: ``job.stage(...,
ranges=TABLE)`` (``swarm.stage.Ranges``).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from typing import Any, Iterator, Mapping, NamedTuple, Protocol, Sequence

from swarm.broker import Broker, stage_queue
from swarm.effects import Continue
from swarm.envelope import Envelope, encode
from swarm.errors import Abort, BadMessage, ConfigError, describe
from swarm.keyrange import HEX, KeySpace, range_cuts, range_prefix
from swarm.ledger import Message, WorkerLedger
from swarm.signing import SiteKeys
from swarm.stage import Job, Ranges, Stage
from swarm.table import Row

log = logging.getLogger("swarm.slices")

CONTINUED = "+"  # a slice's successor: 0 -> 0+1 -> 0+2
PART = ":"  # part i of a split rest: 0+2 -> 0+2:0, 0+2:1...
PROBES, SAMPLE = 64, 8  # a range's rows are estimated from 9 rows read at each of 64 places in it


class Scans(Protocol):
    """What slices read: ``ctx.tables`` in a handler, or a table store."""

    def scan(self, name: str, start: bytes = b"", stop: bytes = b"", prefix: bytes | None = None,
             columns: Sequence[bytes] | None = None, batch_size: int = 1000) -> Iterator[Row]: ...


class HasTables(Protocol):
    """What ``slice_of`` reads of a handler's ``ctx``: its tables."""

    tables: Any


# the slice identity ---------------------------------------------------------------


def next_slice(seq: str) -> str:
    """The identity of the slice after ``seq``: ``0`` -> ``0+1`` -> ``0+2``; ``0+2:1`` -> ``0+2:1+1``."""
    head, sep, count = seq.rpartition(CONTINUED)
    if sep and count.isdigit():
        return f"{head}{CONTINUED}{int(count) + 1}"
    return f"{seq}{CONTINUED}1"


def part_of(seq: str, index: int) -> str:
    """The identity of part ``index`` of the range ``seq`` names, once split."""
    return f"{seq}{PART}{index}"


def is_part(seq: str) -> bool:
    """Whether ``seq`` names a part of a split range, or a slice of one."""
    return PART in seq


# a slice ---------------------------------------------------------------------------


class Slice(NamedTuple):
    """A range's first rows, and the ``Continue`` of the range after them (None when none are left)."""

    rows: list[Row]
    rest: Continue | None


def slice_of(ctx: HasTables, table: str, payload: Mapping[str, Any], rows: int, *,
             columns: Sequence[bytes] | None = None, batch_size: int = 1000, alphabet: bytes = HEX) -> Slice:
    """The first ``rows`` rows of ``table`` in the payload's ``[start, stop)``, and the rest to hand on.

    ``rest`` carries the payload as it is, but for ``start``: the key of the
    first row not taken. It is None when the range holds no more rows, so a
    range is never handed on empty. Reads at most ``rows + 1`` rows. The
    rest's ``estimate`` of its rows is the slice's density over the key space
    (the digits of ``alphabet``) times the rest's width.
    """
    if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
        raise ValueError(f"rows must be a positive number of rows, got {rows!r}")
    try:
        start, stop = key_range(payload)
    except BadMessage as exc:
        raise Abort(f"slice_of: {exc}") from None
    taken: list[Row] = []
    scan = ctx.tables.scan(table, start, stop, columns=columns, batch_size=max(1, min(batch_size, rows + 1)))
    try:
        for key, cells in scan:
            if len(taken) == rows:
                return Slice(taken, Continue({**payload, "start": key}, _rest_rows(start, key, stop, rows, alphabet)))
            taken.append((key, cells))
    finally:
        close = getattr(scan, "close", None)
        if close is not None:
            close()
    return Slice(taken, None)


def _rest_rows(start: bytes, cut: bytes, stop: bytes, rows: int, alphabet: bytes) -> float:
    """About how many rows ``[cut, stop)`` holds, when ``[start, cut)`` held ``rows``."""
    space = KeySpace(range_prefix(start, stop), alphabet)
    low, middle, high = space.position(start), space.position(cut), space.position(stop, stop=True)
    return math.inf if middle <= low else rows * (high - middle) / (middle - low)


def key_range(payload: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """The payload's ``start`` and ``stop``; ``BadMessage`` if either is not bytes."""
    start, stop = payload.get("start"), payload.get("stop")
    if not isinstance(start, bytes) or not isinstance(stop, bytes):
        raise BadMessage("a key range needs bytes 'start' and 'stop' in its payload")
    return start, stop


# splitting ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """``[split]``: whether and how the rest of a phase's last long ranges is split (see the module's doc)."""

    enabled: bool = False
    ways: int = 4  # sub-ranges a rest is cut into
    tail: int = 8  # split only while the phase has at most this many open messages
    min_rows: int = 10_000  # a rest estimated to hold fewer rows than this is not split

    def __post_init__(self) -> None:
        if self.ways < 2:
            raise ConfigError(f"split.ways must be 2 or more, got {self.ways}")
        if self.tail < 1:
            raise ConfigError(f"split.tail must be 1 or more, got {self.tail}")
        if self.min_rows < 0:
            raise ConfigError(f"split.min_rows must be 0 or more, got {self.min_rows}")

    @classmethod
    def of(cls, section: Mapping[str, Any]) -> "SplitSettings":
        """From the config's ``[split]`` section."""
        return cls(bool(section["enabled"]), int(section["ways"]), int(section["tail"]), int(section["min_rows"]))


def split_ranges(payload: Mapping[str, Any], ways: int, alphabet: bytes = HEX) -> list[dict[str, Any]]:
    """The payload's range in up to ``ways`` payloads cut at even keys, covering it exactly; [] if it cannot be cut."""
    try:
        start, stop = key_range(payload)
    except BadMessage:
        return []
    cuts = range_cuts(start, stop, ways, alphabet)
    if not cuts:
        return []
    points = [start, *cuts, stop]
    return [{**payload, "start": low, "stop": high} for low, high in zip(points, points[1:], strict=False)]


def estimated_rows(tables: Scans, table: str, payload: Mapping[str, Any], alphabet: bytes = HEX,
                   least: float = math.inf, probes: int = PROBES, sample: int = SAMPLE) -> float:
    """About how many rows the payload's range of ``table`` holds, from small reads at ``probes`` even places in it.

    The range is cut in ``probes`` pieces of even width; of each, up to
    ``sample + 1`` rows are read: a piece holding no more than ``sample`` is
    counted, else its first rows' spread over the key space
    (``swarm.keyrange.KeySpace``, the digits of ``alphabet``) is taken for its
    density. No more than a guess where keys bunch inside a piece, which is
    all a split's worth needs; it stops once past ``least``.
    """
    start, stop = key_range(payload)
    space = KeySpace(range_prefix(start, stop), alphabet)
    points = [start, *range_cuts(start, stop, probes, alphabet), stop]
    found = 0.0
    for low, high in zip(points, points[1:], strict=False):
        found += _piece_rows(tables, table, space, low, high, sample)
        if found >= least:
            break
    return found


def _piece_rows(tables: Scans, table: str, space: KeySpace, low: bytes, high: bytes, sample: int) -> float:
    scan = tables.scan(table, low, high, batch_size=sample + 1)
    try:
        keys = [key for key, _ in itertools.islice(scan, sample + 1)]
    finally:
        close = getattr(scan, "close", None)
        if close is not None:
            close()
    if len(keys) <= sample:
        return float(len(keys))
    first, reached = space.position(low), space.position(keys[-1])
    if reached <= first:
        return math.inf  # denser than the key space tells apart
    return sample * (space.position(high, stop=True) - first) / (reached - first)


def _worth_it(tables: Scans, ranges: Ranges, payload: Mapping[str, Any], least: int, estimate: float | None) -> bool:
    """Whether the payload's range holds about ``least`` rows or more (``estimate``, when one is known)."""
    if least <= 0:
        return True
    if estimate is None:
        estimate = estimated_rows(tables, ranges.table, payload, ranges.alphabet, least)
    return estimate >= least


def split_messages(env: Envelope, stage: Stage, seq: str, payload: Mapping[str, Any], settings: SplitSettings,
                   tables: Scans, keys: SiteKeys, estimate: float | None = None) -> list[Message]:
    """The parts of ``payload``'s range as messages ``<seq>:<i>`` of ``env``'s chunk, signed; [] when not worth it.

    Not worth it: the stage declares no ranges, the range is too narrow to
    cut, or it holds fewer than ``settings.min_rows`` rows: ``estimate``, or
    else as ``estimated_rows`` reckons.
    """
    if stage.ranges is None:
        return []
    parts = split_ranges(payload, settings.ways, stage.ranges.alphabet)
    if not parts or not _worth_it(tables, stage.ranges, payload, settings.min_rows, estimate):
        return []
    try:
        return [slice_message(env, stage, part_of(seq, i), p, keys) for i, p in enumerate(parts)]
    except Abort:
        return []  # an identity too long to carry (splits of splits of ...): the range goes on whole


def slice_message(env: Envelope, stage: Stage, seq: str, payload: Mapping[str, Any], keys: SiteKeys) -> Message:
    """Message ``seq`` of ``env``'s chunk and ``stage``, with ``payload``, signed; ``Abort`` if it cannot be one."""
    try:
        child = env.child(stage.name, dict(payload), seq)
        return Message(child.id, child.stage, child.chunk, encode(child, keys))
    except (BadMessage, TypeError, ValueError) as exc:
        raise Abort(f"stage {stage.name} handed on an invalid message: {describe(exc)}") from None


def in_tail(ledger: WorkerLedger, broker: Broker, job: Job, env: Envelope, stage: Stage,
            settings: SplitSettings) -> bool:
    """Whether ``env``'s phase is down to its tail: none of ``stage`` ready on its queue, few messages open.

    Retries waiting out their backoff on a delay queue are not work a thread
    could take now. The queue is looked at first: far from the tail it has
    work ready, and the ledger is not asked; the ledger counts no further
    than ``tail + 1``.
    """
    return (broker.depth(stage_queue(job.name, stage.name), delayed=False) == 0
            and ledger.open_count(env.run, env.phase, settings.tail + 1) <= settings.tail)


class HandOn:
    """What a worker makes of a handler's ``Continue``: the next slice or, in the phase's tail, parts of the rest.

    Either is recorded with the slice done, by the one ledger call that
    completes it; a delivery of the slice that does not complete records
    nothing, so whichever delivery completes decides, once.
    """

    def __init__(self, job: Job, ledger: WorkerLedger, broker: Broker, tables: Scans, keys: SiteKeys,
                 settings: SplitSettings | None = None):
        self.job, self.ledger, self.broker, self.tables, self.keys = job, ledger, broker, tables, keys
        self.settings = settings or SplitSettings()

    def messages(self, env: Envelope, stage: Stage, cont: Continue | None) -> list[Message]:
        """The messages ``cont`` makes; ``Abort`` if its payload cannot travel."""
        if cont is None:
            return []
        seq = next_slice(env.seq)
        parts = self._parts(env, stage, seq, cont)
        if parts:
            log.info("split the rest of %s into %d parts at the end of phase %s", env.id, len(parts), env.phase)
            return parts
        return [slice_message(env, stage, seq, cont.payload, self.keys)]

    def _parts(self, env: Envelope, stage: Stage, seq: str, cont: Continue) -> list[Message]:
        if not self.settings.enabled or stage.ranges is None:
            return []
        try:
            if not in_tail(self.ledger, self.broker, self.job, env, stage, self.settings):
                return []
            return split_messages(env, stage, seq, cont.payload, self.settings, self.tables, self.keys, cont.estimate)
        except Exception as exc:  # noqa: BLE001 - a split is only ever worth having: without one the rest goes on whole
            log.warning("not splitting the rest of %s: %s", env.id, describe(exc))
            return []
