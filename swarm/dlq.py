"""Dead letters: gathered from the broker's dead-letter queues into the ledger, inspected, replayed."""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import pprint
from typing import Any, Callable, Mapping

from rich.console import Console
from rich.table import Table
from rich.text import Text

from swarm.broker import Broker, DeadLetter, declare_stages, stage_queue
from swarm.envelope import Envelope, peek
from swarm.errors import ConfigError, PluginError
from swarm.ledger import DeadLetterLedger, DeadLetterRecord
from swarm.stage import Job

ENVELOPE_FIELDS = ("job", "run", "phase", "stage", "chunk", "seq")
UNVERIFIED = "decoded, UNVERIFIED (its signature is not checked: a dead letter may be forged)"
SHOWN_PAYLOAD_CHARS = 16_000  # of a payload as text; --json has all of it
SHOWN_HEX_BYTES = 256  # of a body that does not decode
REPLAY_DELAY = 1.0  # seconds: the ledger has the message queued again before the copy arrives


def message_id(body: bytes) -> str | None:
    """The id a dead letter's body names, unverified (it may be a forgery): for showing and replaying only."""
    env = peek(body)
    return None if env is None else env.id


def collect(broker: Broker, ledger: DeadLetterLedger, job: Job) -> int:
    """Move every message on the job's dead-letter queues into the ledger; returns how many.

    Each letter is stored before the broker lets go of it: a ledger failure
    leaves it, and those behind it, on the queue.
    """
    moved = 0
    for stage in job.stages:
        queue = stage_queue(job.name, stage)
        declare_stages(broker, job, [stage])  # with its bound: a queue's arguments must match
        moved += broker.take_dead(queue, functools.partial(_store, ledger, queue))
    return moved


def collect_every_job(broker: Broker, ledger: Any, load_job: Callable[[str], Job], warn: Callable[[str], None]) -> None:
    """Gather the dead letters of every job the ledger has runs of, as ``swarm dlq list`` does before it lists.

    A job this host cannot load is skipped, with ``warn``; a broker that
    cannot be read raises ``BackendError``. The in-process broker's queues
    went with the process that ran the job: there is nothing to gather.
    """
    if not broker.outlives_process:
        return
    for name in ledger.jobs():
        try:
            job = load_job(name)
        except PluginError as exc:
            warn(f"not gathering the dead letters of job {name!r}: cannot load it ({exc})")
            continue
        collect(broker, ledger, job)


def _store(ledger: DeadLetterLedger, queue: str, dead: DeadLetter) -> None:
    ledger.add_dead_letter(queue, dead.reason, dead.body, message_id(dead.body), dead.size, dead.sha256)


def replay(broker: Broker, ledger: DeadLetterLedger, ids: list[int]) -> int:
    """Publish dead letters again, unchanged: same body, same message id, so a replay is idempotent.

    Each is published before the ledger changes, a little delayed, so that a
    publish that fails changes nothing, and the copy finds its message queued.
    On the in-process broker nothing is published: the message is queued in
    the ledger, and the master of the job's next ``swarm run`` publishes it.
    """
    records = [_replayable(ledger, dl_id) for dl_id in ids]
    for record in records:
        if broker.outlives_process:  # else its queues go with this process: the job's next `swarm run` sends it
            broker.publish([(record.queue, record.body)], delay=REPLAY_DELAY)
        if record.message_id:
            ledger.revive(record.message_id)
        ledger.mark_replayed([record.id])
    return len(records)


def _replayable(ledger: DeadLetterLedger, dl_id: int) -> DeadLetterRecord:
    record = ledger.get_dead_letter(dl_id)
    if record is None:
        raise ConfigError(f"no dead letter {dl_id}")
    if record.truncated:
        raise ConfigError(f"dead letter {dl_id} was stored cut to {len(record.body):,} of its {record.size:,} bytes "
                          f"(sha256 {record.sha256}); it cannot be replayed")
    return record


def _doc(record: DeadLetterRecord) -> dict:
    doc = dataclasses.asdict(record)
    body = doc.pop("body")
    doc["body_bytes"] = len(body)
    doc["truncated"] = record.truncated
    doc["body_hex"] = body[:SHOWN_HEX_BYTES].hex()
    return doc


def print_list(records: list[DeadLetterRecord], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps([_doc(r) for r in records], indent=2))
        return
    table = Table("id", "queue", "message", "when", "reason")
    for r in records:
        when = datetime.datetime.fromtimestamp(r.created_at).strftime("%Y-%m-%d %H:%M:%S")
        reason = (r.reason.splitlines() or [""])[0][:90]
        # Text, not markup: a reason or a forged message id may hold brackets rich would read as styles.
        table.add_row(str(r.id), Text(r.queue), Text(r.message_id or "(undecodable)"), when, Text(reason))
    Console().print(table)


def print_one(ledger: DeadLetterLedger, dl_id: int, as_json: bool = False) -> None:
    """One dead letter; its body decoded when it is an envelope (its signature unchecked), else in hex."""
    record = ledger.get_dead_letter(dl_id)
    if record is None:
        raise ConfigError(f"no dead letter {dl_id}")
    env = peek(record.body)
    if as_json:
        doc = _doc(record)
        if env is not None:
            doc["envelope"] = envelope_doc(env)
        print(json.dumps(doc, indent=2))
        return
    cut = f", stored cut to {len(record.body):,}" if record.truncated else ""
    print(f"dead letter {record.id} on {record.queue}\nmessage: {record.message_id or '(undecodable)'}\n"
          f"reason:\n{record.reason}\nbody ({record.size:,} bytes{cut}, sha256 {record.sha256})", end="")
    print(hex_text(record.body) if env is None else _envelope_text(env))


def hex_text(body: bytes) -> str:
    """A body that does not decode, as the start of its hex."""
    first = f" (its first {SHOWN_HEX_BYTES} bytes)" if len(body) > SHOWN_HEX_BYTES else ""
    return f", not an envelope that decodes; in hex{first}: {body[:SHOWN_HEX_BYTES].hex()}"


def payload_text(env: Envelope, all_of_it: str = "--json shows all") -> str:
    """An envelope's payload as Python literals, cut to ``SHOWN_PAYLOAD_CHARS``; ``all_of_it`` says where the rest is.

    repr shows bytes as b'\\x00' and escapes control characters, which a forged letter could aim at a terminal.
    """
    payload = pprint.pformat(dict(env.payload), width=100, sort_dicts=False)
    if len(payload) > SHOWN_PAYLOAD_CHARS:
        payload = f"{payload[:SHOWN_PAYLOAD_CHARS]}... ({len(payload):,} characters in all; {all_of_it})"
    return payload


def _envelope_text(env: Envelope) -> str:
    payload = payload_text(env)
    fields = "".join(f"\n  {name}: {getattr(env, name)}" for name in ENVELOPE_FIELDS)
    label = "  payload: "
    return f"\n{UNVERIFIED}:{fields}\n{label}" + payload.replace("\n", "\n" + " " * len(label))


def envelope_doc(env: Envelope) -> dict:
    """A decoded envelope as plain data, marked unchecked; bytes in its payload as their Python repr."""
    return {"signature_checked": False, "id": env.id, **{name: getattr(env, name) for name in ENVELOPE_FIELDS},
            "payload": _readable(env.payload)}


def _readable(value: Any) -> Any:
    """``value`` for JSON: bytes as their Python repr, ``b'\\x00...'``, at any depth."""
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value))
    if isinstance(value, Mapping):
        return {k if isinstance(k, str) else repr(k): _readable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_readable(v) for v in value]
    return value
