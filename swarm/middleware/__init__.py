"""Cross-cutting behaviour around the message path, one concern a module (as Dramatiq's middleware).

The path (``swarm.runtime``) calls each hook at its moment; a middleware
overrides the hooks it needs. A hook that raises is logged and the path
goes on: what a middleware measures or says must never change a message's fate.
"""
from __future__ import annotations

import logging
from typing import Sequence

from swarm.envelope import Envelope
from swarm.outcome import Outcome
from swarm.stage import Stage

log = logging.getLogger("swarm.worker")


class Middleware:
    """The hooks, each doing nothing here."""

    def before_claim(self, stage_name: str, count: int) -> None:
        """A batch of ``count`` deliveries of a stage is about to be claimed in the ledger."""

    def after_claim(self, stage_name: str, granted: int, seconds: float) -> None:
        """The claim answered: ``granted`` messages of the batch are this worker's to run."""

    def before_handler(self, stage: Stage, env: Envelope) -> None:
        """A handler is about to run."""

    def after_handler(self, stage: Stage, env: Envelope, seconds: float, failure: str | None) -> None:
        """It returned (``failure`` None), or raised a fault or an abort (``"fault"``, ``"abort"``)."""

    def before_commit(self, stage_name: str, count: int) -> None:
        """The effects of ``count`` handled messages are about to be written, recorded and published."""

    def after_commit(self, stage_name: str, committed: int, seconds: float) -> None:
        """The commit ended: ``committed`` messages are recorded done with their children published."""

    def after_publish(self, stage_name: str, count: int) -> None:
        """``count`` messages for ``stage_name`` were confirmed by the broker."""

    def on_queue_full(self, stage_name: str, refused: int) -> None:
        """Stage ``stage_name``'s bounded queue refused ``refused`` messages published to it (it is full)."""

    def on_retry(self, stage: Stage, env: Envelope, delay: float, attempt: int, error: str) -> None:
        """A fault: the message comes back after ``delay`` seconds."""

    def on_dead_letter(self, stage_name: str, msg_id: str | None, reason: str) -> None:
        """A message went to its stage's dead-letter queue (spent its attempts, or was rejected)."""

    def on_abort(self, stage: Stage, env: Envelope, reason: str) -> None:
        """A message stopped for good; its run will fail."""

    def after_settle(self, stage_name: str, outcome: Outcome) -> None:
        """A delivery's fate is settled."""


class Middlewares(Middleware):
    """Several middlewares as one, in order; a hook that raises is logged, not passed on."""

    def __init__(self, middlewares: Sequence[Middleware]):
        self.middlewares = list(middlewares)

    def _each(self, hook: str, *args: object) -> None:
        for middleware in self.middlewares:
            try:
                getattr(middleware, hook)(*args)
            except Exception:  # noqa: BLE001 - a middleware's bug must not change a message's fate
                log.exception("middleware %s failed in %s", type(middleware).__name__, hook)

    def before_claim(self, stage_name: str, count: int) -> None:
        self._each("before_claim", stage_name, count)

    def after_claim(self, stage_name: str, granted: int, seconds: float) -> None:
        self._each("after_claim", stage_name, granted, seconds)

    def before_handler(self, stage: Stage, env: Envelope) -> None:
        self._each("before_handler", stage, env)

    def after_handler(self, stage: Stage, env: Envelope, seconds: float, failure: str | None) -> None:
        self._each("after_handler", stage, env, seconds, failure)

    def before_commit(self, stage_name: str, count: int) -> None:
        self._each("before_commit", stage_name, count)

    def after_commit(self, stage_name: str, committed: int, seconds: float) -> None:
        self._each("after_commit", stage_name, committed, seconds)

    def after_publish(self, stage_name: str, count: int) -> None:
        self._each("after_publish", stage_name, count)

    def on_queue_full(self, stage_name: str, refused: int) -> None:
        self._each("on_queue_full", stage_name, refused)

    def on_retry(self, stage: Stage, env: Envelope, delay: float, attempt: int, error: str) -> None:
        self._each("on_retry", stage, env, delay, attempt, error)

    def on_dead_letter(self, stage_name: str, msg_id: str | None, reason: str) -> None:
        self._each("on_dead_letter", stage_name, msg_id, reason)

    def on_abort(self, stage: Stage, env: Envelope, reason: str) -> None:
        self._each("on_abort", stage, env, reason)

    def after_settle(self, stage_name: str, outcome: Outcome) -> None:
        self._each("after_settle", stage_name, outcome)


def default_middleware(job: str) -> Middlewares:
    """What every worker runs with: its metrics and its log lines."""
    from swarm.middleware.logs import Logs
    from swarm.middleware.metrics import Metrics

    return Middlewares([Metrics(job), Logs()])
