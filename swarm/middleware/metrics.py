"""The worker's Prometheus metrics (``swarm.metrics``), fed from the message path's hooks."""
from __future__ import annotations

from swarm import metrics
from swarm.envelope import Envelope
from swarm.middleware import Middleware
from swarm.outcome import Outcome
from swarm.stage import Stage


class Metrics(Middleware):
    """Messages by outcome; claim, handler and commit latency; failures, busy threads, retries, dead letters."""

    def __init__(self, job: str):
        self.job = job

    def after_claim(self, stage_name: str, granted: int, seconds: float) -> None:
        metrics.CLAIM_SECONDS.labels(self.job, stage_name).observe(seconds)

    def after_commit(self, stage_name: str, committed: int, seconds: float) -> None:
        metrics.COMMIT_SECONDS.labels(self.job, stage_name).observe(seconds)

    def before_handler(self, stage: Stage, env: Envelope) -> None:
        metrics.BUSY.labels(self.job, stage.name).inc()

    def after_handler(self, stage: Stage, env: Envelope, seconds: float, failure: str | None) -> None:
        metrics.BUSY.labels(self.job, stage.name).dec()
        metrics.HANDLER_SECONDS.labels(self.job, stage.name).observe(seconds)
        if failure is not None:
            metrics.HANDLER_ERRORS.labels(self.job, stage.name, failure).inc()

    def after_publish(self, stage_name: str, count: int) -> None:
        metrics.PUBLISHED.labels(self.job, stage_name).inc(count)

    def on_queue_full(self, stage_name: str, refused: int) -> None:
        metrics.QUEUE_FULL.labels(self.job, stage_name).inc(refused)

    def on_retry(self, stage: Stage, env: Envelope, delay: float, attempt: int, error: str) -> None:
        metrics.RETRIES.labels(self.job, stage.name).inc()

    def on_dead_letter(self, stage_name: str, msg_id: str | None, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(self.job, stage_name).inc()

    def after_settle(self, stage_name: str, outcome: Outcome) -> None:
        metrics.MESSAGES.labels(self.job, stage_name, outcome.value).inc()
