"""The worker's log lines about messages' fates: retries, dead letters, aborts.

Only ids and the first line of a reason: a handler's error may quote its data.
"""
from __future__ import annotations

import logging

from swarm.envelope import Envelope
from swarm.errors import clip
from swarm.middleware import Middleware
from swarm.stage import Stage

log = logging.getLogger("swarm.worker")


def first_line(text: str) -> str:
    return clip(text.splitlines()[0] if text else text, 300)


class Logs(Middleware):
    def on_retry(self, stage: Stage, env: Envelope, delay: float, attempt: int, error: str) -> None:
        log.warning("retrying %s in %.1fs (attempt %d): %s", env.id, delay, attempt, first_line(error))

    def on_dead_letter(self, stage_name: str, msg_id: str | None, reason: str) -> None:
        log.error("dead-lettered %s on stage %s: %s", msg_id or "a message", stage_name, first_line(reason))

    def on_abort(self, stage: Stage, env: Envelope, reason: str) -> None:
        log.error("aborted %s: %s", env.id, first_line(reason))
