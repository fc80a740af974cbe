"""How much of a stage a worker holds, and when its controller judges a window: the rule in one place.

A stage holds at most ``bound`` deliveries: ``prefetch`` when the job sets
it, else ``pool x batch``, every thread a full batch. Below the full pool
the broker's prefetch follows the controller's limit: the working threads'
batches and one batch more, so that a backlog still shows in the stage's
own queue. A busy window is judged once it holds ``JUDGE_AFTER_DONE``
completions, or has lasted ``JUDGE_WITHIN_SECONDS`` with a completion per
working thread (slow handlers get long windows), or ``STUCK_WINDOWS`` times
that long whatever it holds (threads stuck in hung handlers must not pin
the limit).
"""
from __future__ import annotations

from typing import Protocol


class Stage(Protocol):
    """What the rule reads of a stage (``swarm.stage.Stage`` has it)."""

    @property
    def bound(self) -> int: ...
    @property
    def pool(self) -> int: ...
    @property
    def pool_min(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def timeout(self) -> float: ...

JUDGE_AFTER_DONE = 20
JUDGE_WITHIN_SECONDS = 10.0
STUCK_WINDOWS = 30


def bound(prefetch: int | None, pool: int, batch: int) -> int:
    """Most deliveries of a stage in a worker process at once."""
    return prefetch or pool * batch


def prefetch_at(stage: Stage, limit: int) -> int:
    """The stage's prefetch while ``limit`` threads may work: their batches and one more, within its bound."""
    return stage.bound if limit >= stage.pool else min(stage.bound, (limit + 1) * stage.batch)


def longest_hold(stage: Stage) -> float:
    """Longest a delivery can wait for its ack: its thread's batch, and a batch before it below the full pool."""
    return stage.timeout * stage.batch * (2 if stage.pool_min < stage.pool else 1)
