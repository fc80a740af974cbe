"""The queues behind one stage queue ``Q``, declared idempotently with arguments for the server's features.

``Q``             the stage queue: a quorum queue (classic durable on a server
                  without quorum queues) with ``x-delivery-limit``,
                  dead-lettering through the default exchange to ``Q.dlq``;
                  at-least-once dead-lettering on RabbitMQ >= 3.10, so the
                  broker keeps a message until ``Q.dlq`` has confirmed it.
``Q.dlq``         dead letters: ours carry ``x-swarm-reason``, the broker's
                  carry ``x-death``.
``Q.retry.<ms>``  delay tiers of 1 s to 2048 s, powers of two. Each has a fixed
                  ``x-message-ttl`` and dead-letters back to ``Q``. A delayed
                  publish goes to the tier nearest the delay asked for (within
                  a factor of 1.41; longer delays take the last tier). Fixed
                  TTLs matter because RabbitMQ expires messages only at the
                  head of a queue: with per-message TTLs a short delay would
                  wait behind a long one. Nothing waits unacked in a worker.

A bounded stage (``max_queue=N``) adds ``x-max-length: N`` to ``Q`` (it
has ``x-overflow: reject-publish`` already): the broker refuses a publish
beyond N ready messages with a nack, which the publisher turns into
``QueueFull``. A delayed message that comes due while ``Q`` is full stays in
its delay queue (at-least-once dead-lettering) and is offered again later
(RabbitMQ's dead-letter worker retries every few minutes). Bounds need
RabbitMQ >= 3.10: with at-most-once dead-lettering, a delayed message that
met a full queue would be dropped, so a bound is refused on older servers.

A classic stage queue has no delivery limit: only the ledger's attempt count
ends a loop there. Changing ``delivery_limit`` or a stage's bound for an
existing queue (adding one, removing it, or another N) makes ``declare``
fail with the broker's "inequivalent arg" message: drain and delete the
queue, then declare it again.
"""
from __future__ import annotations

import math
import re
from typing import Any

from swarm.broker import REASON_HEADER, dead_letter_queue
from swarm.errors import BackendRefused

DELAY_TIERS_MS: tuple[int, ...] = tuple(1000 * 2**k for k in range(12))  # 1 s .. 2048 s
DEATH_REASONS = {
    "delivery_limit": "delivery limit exceeded",
    "rejected": "rejected by a consumer",
    "expired": "expired",
    "maxlen": "queue length limit exceeded",
}


def retry_queue(queue: str, tier_ms: int) -> str:
    """The delay queue of ``queue`` whose messages wait ``tier_ms`` milliseconds."""
    return f"{queue}.retry.{tier_ms}"


def delay_queues(queue: str) -> list[str]:
    """Every delay queue of ``queue``, shortest first."""
    return [retry_queue(queue, ms) for ms in DELAY_TIERS_MS]


def delay_tier(seconds: float) -> int:
    """The delay tier (ms) nearest to ``seconds`` by ratio, within the tiers there are."""
    k = round(math.log2(max(seconds, 0.001)))
    return DELAY_TIERS_MS[min(max(k, 0), len(DELAY_TIERS_MS) - 1)]


def server_version(properties: dict) -> tuple[int, int]:
    """(major, minor) of a RabbitMQ server; (0, 0) for anything else, which gets classic queues."""
    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    match = re.match(r"(\d+)\.(\d+)", text(properties.get("version")))
    if "rabbitmq" not in text(properties.get("product")).lower() or not match:
        return (0, 0)
    return int(match.group(1)), int(match.group(2))


class Topology:
    """The queues behind one stage queue, with arguments for the server's features."""

    def __init__(self, version: tuple[int, int], delivery_limit: int):
        self.quorum = version >= (3, 8)
        self.quorum_ttl = version >= (3, 10)  # message TTL and at-least-once dead-lettering in quorum queues
        self.delivery_limit = delivery_limit

    def queues(self, queue: str, max_length: int | None = None) -> list[tuple[str, dict]]:
        """(name, arguments) to declare for ``queue``, each dead-letter target before its source.

        ``max_length``: the stage's bound; ``BackendRefused`` on a server that cannot keep one safely.
        """
        dlq = dead_letter_queue(queue)
        stage = self._kind(self.quorum) | self._dead_letter_to(dlq, self.quorum)
        if self.quorum:
            stage["x-delivery-limit"] = self.delivery_limit
        if max_length is not None:
            if not self.quorum_ttl:
                raise BackendRefused(f"queue {queue!r}: a bounded stage (max_queue={max_length}) needs RabbitMQ "
                                     ">= 3.10: on older servers a delayed message that meets the full queue is "
                                     "dropped. Upgrade RabbitMQ, or leave the stage unbounded")
            stage |= {"x-max-length": max_length, "x-overflow": "reject-publish"}
        out = [(dlq, self._kind(self.quorum)), (queue, stage)]
        for ms in DELAY_TIERS_MS:
            tier = self._kind(self.quorum_ttl) | {"x-message-ttl": ms} | self._dead_letter_to(queue, self.quorum_ttl)
            out.append((retry_queue(queue, ms), tier))
        return out

    @staticmethod
    def _kind(quorum: bool) -> dict:
        return {"x-queue-type": "quorum"} if quorum else {}

    def _dead_letter_to(self, target: str, quorum: bool) -> dict:
        args: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": target}
        if quorum and self.quorum_ttl:
            # the default at-most-once drops a message if the target does not take it
            args |= {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        return args


def dead_letter_reason(headers: dict | None) -> str:
    """Why a message is in a dead-letter queue: ours, or RabbitMQ's latest x-death."""
    headers = headers or {}
    ours = headers.get(REASON_HEADER)
    if ours is not None:
        return ours.decode("utf-8", "replace") if isinstance(ours, bytes) else str(ours)
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):
        why = deaths[0].get("reason", "")
        why = why.decode() if isinstance(why, bytes) else str(why)
        return DEATH_REASONS.get(why, why or "unknown")
    return "unknown"
