"""Dead letters: gathered from the broker's dead-letter queues into the ledger, inspected, replayed."""
from __future__ import annotations

import dataclasses
import datetime
import json

from rich.console import Console
from rich.table import Table

from swarm.broker import Broker, stage_queue
from swarm.envelope import decode
from swarm.errors import BadMessage, ConfigError
from swarm.ledger import DeadLetterRecord, Ledger
from swarm.stage import Job


def message_id(body: bytes) -> str | None:
    try:
        return decode(body).id
    except BadMessage:
        return None


def collect(broker: Broker, ledger: Ledger, job: Job) -> int:
    """Move every message on the job's dead-letter queues into the ledger; returns how many."""
    moved = 0
    for stage in job.stages:
        queue = stage_queue(job.name, stage)
        broker.declare([queue])
        for dead in broker.take_dead(queue):
            ledger.add_dead_letter(queue, dead.reason, dead.body, message_id(dead.body))
            moved += 1
    return moved


def replay(broker: Broker, ledger: Ledger, ids: list[int]) -> int:
    """Publish dead letters again, unchanged: same body, same message id, so a replay is idempotent."""
    records = []
    for dl_id in ids:
        record = ledger.get_dead_letter(dl_id)
        if record is None:
            raise ConfigError(f"no dead letter {dl_id}")
        records.append(record)
    for record in records:
        if record.message_id:
            ledger.revive(record.message_id)
        broker.publish([(record.queue, record.body)])
        ledger.mark_replayed([record.id])
    return len(records)


def _doc(record: DeadLetterRecord) -> dict:
    doc = dataclasses.asdict(record)
    body = doc.pop("body")
    doc["body_bytes"] = len(body)
    doc["body_hex"] = body[:256].hex()
    return doc


def print_list(records: list[DeadLetterRecord], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps([_doc(r) for r in records], indent=2))
        return
    table = Table("id", "queue", "message", "when", "reason")
    for r in records:
        when = datetime.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(r.id), r.queue, r.message_id or "(undecodable)", when, r.reason.splitlines()[0][:90])
    Console().print(table)


def print_one(ledger: Ledger, dl_id: int, as_json: bool = False) -> None:
    record = ledger.get_dead_letter(dl_id)
    if record is None:
        raise ConfigError(f"no dead letter {dl_id}")
    if as_json:
        print(json.dumps(_doc(record), indent=2))
        return
    print(f"dead letter {record.id} on {record.queue}\nmessage: {record.message_id or '(undecodable)'}\n"
          f"reason:\n{record.reason}\nbody ({len(record.body)} bytes): {record.body[:256].hex()}")
