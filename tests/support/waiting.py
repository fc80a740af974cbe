"""Waiting for something to happen in another thread or process."""
from __future__ import annotations

import time
from typing import Callable


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0, every: float = 0.02) -> float:
    """Wait until ``condition()`` holds; return the seconds that took.

    Gives up with an ``AssertionError`` naming ``what`` after ``timeout``
    seconds: the timeout only stops a broken test from hanging, so it is
    generous. ``condition`` is called every ``every`` seconds; a condition
    that opens connections or starts processes asks less often.
    """
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")
        time.sleep(every)
    return time.monotonic() - started
