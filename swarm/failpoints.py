"""Named places where a test can make this process die for real (SIGKILL).

``SWARM_FAILPOINTS="master.mid_publish=1,worker.after_apply=0.05"`` kills the
process the first time it reaches ``master.mid_publish`` and at 5% of the
times it reaches ``worker.after_apply``. An integer N >= 1 means "on the Nth
time". Unset (always, in production) a failpoint costs one dict lookup.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading

_ENV = "SWARM_FAILPOINTS"


def _parse(text: str) -> dict[str, float]:
    points = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = item.partition("=")
        points[name] = float(value or 1)
    return points


_points = _parse(os.environ.get(_ENV, ""))
_hits: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    """Die here if the environment asks for it."""
    if not _points or name not in _points:
        return
    rule = _points[name]
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        hit = _hits[name]
    if (rule >= 1 and hit == int(rule)) or (rule < 1 and random.random() < rule):
        sys.stderr.write(f"failpoint {name}: killing process {os.getpid()}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
