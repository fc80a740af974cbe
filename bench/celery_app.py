"""The Celery side of the comparison: a chain of two no-op tasks, each on a quorum queue of its own.

Guarantees as close to Swarm's as Celery offers: persistent messages,
``acks_late`` (ack after the task returned), publisher confirms on every
publish, including the chain's next task sent from the worker, prefetch 1
per process. No result backend: Swarm's ledger has no equivalent in Celery.
The broker URL comes from ``BENCH_CELERY_BROKER``.
"""
from __future__ import annotations

import os

from celery import Celery
from kombu import Exchange, Queue

QUEUE_A, QUEUE_B = "bench.celery.a", "bench.celery.b"
_QUORUM = {"x-queue-type": "quorum"}
_EXCHANGE = Exchange("bench", type="direct", durable=True)

app = Celery("bench", broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=False,  # Celery's default: a lost worker's task is acked, not redelivered
    task_ignore_result=True,
    task_default_delivery_mode="persistent",
    broker_transport_options={"confirm_publish": True},
    worker_prefetch_multiplier=1,
    worker_detect_quorum_queues=True,
    task_queues=[Queue(q, _EXCHANGE, routing_key=q, queue_arguments=_QUORUM) for q in (QUEUE_A, QUEUE_B)],
    task_routes={"bench.a": {"queue": QUEUE_A, "routing_key": QUEUE_A},
                 "bench.b": {"queue": QUEUE_B, "routing_key": QUEUE_B}},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.a")
def a(i: int) -> int:
    return i


@app.task(name="bench.b")
def b(i: int) -> None:
    return None
