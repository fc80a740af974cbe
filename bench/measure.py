"""Turning timestamps and /proc samples into the bench's figures; pure where it can be."""
from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from typing import Callable, Iterable, Sequence

STEADY = (0.05, 0.95)  # the share of messages between which a run counts as steady


@dataclasses.dataclass
class Throughput:
    """Messages handled (every stage's deliveries count) and the steady-state rate."""

    messages: int
    seconds: float  # first delivery to last ack
    msgs_per_s: float  # over the steady window
    procs: int

    @property
    def per_proc(self) -> float:
        return self.msgs_per_s / self.procs if self.procs else 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"per_proc": self.per_proc}


def steady_rate(done_at: Sequence[float], started: float | None = None, procs: int = 1,
                window: tuple[float, float] = STEADY) -> Throughput:
    """The rate between the ``window`` shares of the messages done, so start-up and the tail do not count.

    ``done_at``: when each message was acked (any clock, one clock for all).
    """
    times = sorted(done_at)
    n = len(times)
    if n < 2:
        return Throughput(n, 0.0, 0.0, procs)
    lo, hi = int(window[0] * (n - 1)), int(math.ceil(window[1] * (n - 1)))
    span = times[hi] - times[lo]
    rate = (hi - lo) / span if span > 0 else 0.0
    first = started if started is not None else times[0]
    return Throughput(n, times[-1] - first, rate, procs)


def rate_between(done_at: Iterable[float], start: float, end: float) -> float:
    """Messages done per second within [start, end)."""
    return sum(1 for t in done_at if start <= t < end) / (end - start) if end > start else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[rank]


# memory ------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS`` now, ``VmHWM`` the peak); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    return _pids_where(lambda p: (fields := _stat_fields(p)) is not None and int(fields[1]) == pid)


def _pids_where(test: Callable[[int], bool]) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and test(int(entry))]


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from the state on (field 3 of proc(5) is index 0); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # the command name (2nd field) is in parentheses and may hold spaces
            return stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmHWM") / 1024


class RssSampler:
    """Samples the RSS of some processes every ``every`` seconds on a thread of its own."""

    def __init__(self, pids: Sequence[int], every: float = 1.0):
        self.pids, self.every = list(pids), every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB summed over pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.samples.append((time.monotonic() - self._started, sum(rss_mib(p) for p in self.pids)))
            if self._stop.wait(self.every):
                return


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (all its threads); 0 if it is gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (the broker's and the database's, say)."""

    def named(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/comm") as comm:
                return comm.read().strip() == name
        except (FileNotFoundError, ProcessLookupError):
            return False

    return _pids_where(named)


class CpuMeter:
    """Cores used by groups of processes between ``__enter__`` and ``__exit__``."""

    def __init__(self, groups: dict[str, Sequence[int]]):
        self.groups = groups
        self.cores: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def __enter__(self) -> "CpuMeter":
        self._started, self._before = time.monotonic(), self._now()
        return self

    def __exit__(self, *_exc) -> None:
        after, seconds = self._now(), time.monotonic() - self._started
        self.cores = {name: (after[name] - self._before[name]) / seconds for name in self.groups}


def growth(samples: Sequence[tuple[float, float]], settle: float) -> float:
    """RSS growth from the first sample after ``settle`` seconds to the largest later one, as a fraction."""
    later = [mib for t, mib in samples if t >= settle]
    if len(later) < 2 or later[0] <= 0:
        return math.nan
    return max(later) / later[0] - 1
