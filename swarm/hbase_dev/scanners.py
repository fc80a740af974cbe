"""Server-side scanners with leases, as an HBase Thrift server keeps them.

A scanner reads forward from the row after the last one it returned, so it
holds no cursor into the store between calls. Its lease ends when its client
leaves it idle longer than the lease (HBase's
``hbase.client.scanner.timeout.period``, 60 s by default); the next call then
fails with HBase's ``ScannerTimeoutException`` and the client must reopen.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import random
import threading
import time
from typing import Callable, Iterator

from swarm.hbase_dev.columns import Cells, Selection
from swarm.hbase_dev.errors import HBaseError, IllegalArgumentError
from swarm.tables.embedded import EmbeddedTables

# One result of a scanner: a row key and its cells ``(column, value, timestamp)`` in column order.
Chunk = tuple[bytes, list[tuple[bytes, bytes, int]]]

_TOMBSTONES = 10_000  # expired ids remembered, to say "timed out" rather than "invalid"


@dataclasses.dataclass(frozen=True)
class ScanSpec:
    table: str
    start: bytes
    stop: bytes
    selection: Selection
    batch: int | None = None  # HBase's Scan.setBatching: at most this many cells per result
    sort_columns: bool = False


class Scanner:
    """Reads a table forward in key order, resuming after the last row it read."""

    def __init__(self, store: EmbeddedTables, spec: ScanSpec):
        self.spec = spec
        self._store = store
        self._next = spec.start
        self._pending: collections.deque[Chunk] = collections.deque()
        self._exhausted = False

    def next(self, count: int) -> list[Chunk]:
        out: list[Chunk] = []
        while len(out) < count:
            if self._pending:
                out.append(self._pending.popleft())
            elif self._exhausted:
                break
            else:
                self._fill(count - len(out))
        return out

    def _fill(self, want: int) -> None:
        spec = self.spec
        found = self._store.scan_cells(spec.table, self._next, spec.stop, spec.selection.prefilter(), want)
        rows = list(itertools.islice(found, want))
        found.close()
        if len(rows) < want:
            self._exhausted = True
        for key, cells in rows:
            self._next = key + b"\x00"  # the smallest key after ``key``
            picked = spec.selection.pick(cells)
            if picked:
                self._pending.extend(_chunks(key, picked, spec.batch))


def _chunks(key: bytes, cells: Cells, batch: int | None) -> Iterator[Chunk]:
    flat = [(col, value, ts) for col, (value, ts) in sorted(cells.items())]
    size = batch if batch and batch > 0 else len(flat)
    for i in range(0, len(flat), size):
        yield key, flat[i : i + size]


@dataclasses.dataclass
class _Lease:
    scanner: Scanner
    last_used: float
    users: int = 0  # calls in progress: a lease does not end during a call
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class ScannerRegistry:
    """Open scanners by id; a scanner idle longer than ``lease`` seconds is gone."""

    def __init__(self, lease: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.lease = lease
        self._clock = clock
        self._lock = threading.Lock()
        self._open: dict[int, _Lease] = {}
        self._expired: collections.OrderedDict[int, float] = collections.OrderedDict()
        # Ids start at a random point so an id held across a server restart never names a new scanner.
        self._ids = itertools.count(random.randrange(1, 1 << 30))

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def add(self, scanner: Scanner) -> int:
        with self._lock:
            now = self._clock()
            self._reap(now)
            sid = next(self._ids) & 0x7FFFFFFF  # a Thrift i32
            self._open[sid] = _Lease(scanner, now)
            return sid

    @contextlib.contextmanager
    def use(self, sid: int) -> Iterator[Scanner]:
        """The scanner ``sid`` for one call; its lease restarts when the call ends."""
        lease = self._take(sid)
        try:
            with lease.lock:  # one call at a time reads a scanner
                yield lease.scanner
        finally:
            with self._lock:
                lease.users -= 1
                lease.last_used = self._clock()

    def _take(self, sid: int) -> _Lease:
        with self._lock:
            now = self._clock()
            self._reap(now)
            lease = self._open.get(sid)
            if lease is not None:
                lease.users += 1
                return lease
            if sid in self._expired:
                raise self._timeout(self._expired[sid])
        raise IllegalArgumentError("scanner ID is invalid")

    def close(self, sid: int) -> None:
        """Forget ``sid``; closing a scanner whose lease ended is not an error."""
        with self._lock:
            if self._open.pop(sid, None) is None and self._expired.pop(sid, None) is None:
                raise IllegalArgumentError("scanner ID is invalid")

    def expire_all(self) -> int:
        """End every idle scanner's lease now, as if its client had left it too long; how many."""
        with self._lock:
            return self._reap(self._clock(), force=True)

    def clear(self) -> None:
        with self._lock:
            self._open.clear()
            self._expired.clear()

    def _reap(self, now: float, force: bool = False) -> int:
        ended = [
            sid
            for sid, lease in self._open.items()
            if not lease.users and (force or now - lease.last_used > self.lease)
        ]
        for sid in ended:
            self._expired[sid] = now - self._open.pop(sid).last_used
            while len(self._expired) > _TOMBSTONES:
                self._expired.popitem(last=False)
        return len(ended)

    def _timeout(self, idle: float) -> HBaseError:
        return HBaseError(
            f"org.apache.hadoop.hbase.client.ScannerTimeoutException: {int(idle * 1000)}ms passed since "
            f"the last invocation, timeout is currently set to {int(self.lease * 1000)}"
        )
