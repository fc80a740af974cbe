"""The message envelope: what travels on every stage queue, as msgpack."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import msgpack

from swarm.errors import BadMessage

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 1 << 20  # checked before decoding; a stage may lower it
MAX_ID_CHARS = 255  # the ledger's key column

_NAME = re.compile(r"^[A-Za-z0-9_.:@=,+#-]{1,128}$")
_NAME_FIELDS = ("job", "run", "phase", "stage", "chunk", "seq")
_FIELDS = {
    "v": int,
    "job": str,
    "run": str,
    "phase": str,
    "stage": str,
    "chunk": str,
    "seq": str,
    "attempt": int,
    "payload": dict,
}


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One unit of work for one stage.

    ``id`` is deterministic, made of (run, phase, chunk, stage, seq): the same
    work always has the same id, which is what lets workers skip duplicates.
    """

    job: str
    run: str
    phase: str
    stage: str
    chunk: str
    seq: str = "0"
    attempt: int = 1
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.run}/{self.phase}/{self.chunk}/{self.stage}/{self.seq}"

    def next_attempt(self) -> "Envelope":
        return dataclasses.replace(self, attempt=self.attempt + 1)

    def child(self, stage: str, payload: Mapping[str, Any], seq: str) -> "Envelope":
        return dataclasses.replace(self, stage=stage, payload=payload, seq=seq, attempt=1)

    def __post_init__(self) -> None:
        for name in _NAME_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise BadMessage(f"field {name!r} must be 1-128 characters of [A-Za-z0-9_.:@=,+#-], got {value!r}")
        if not isinstance(self.attempt, int) or isinstance(self.attempt, bool) or self.attempt < 1:
            raise BadMessage(f"field 'attempt' must be a positive integer, got {self.attempt!r}")
        if not isinstance(self.payload, Mapping):
            raise BadMessage(f"field 'payload' must be a map, got {type(self.payload).__name__}")
        if len(self.id) > MAX_ID_CHARS:
            raise BadMessage(f"message id is longer than {MAX_ID_CHARS} characters: {self.id[:60]}...")


def encode(env: Envelope) -> bytes:
    """Serialise to msgpack; refuses payloads msgpack cannot carry."""
    doc = {"v": SCHEMA_VERSION, **{f: getattr(env, f) for f in _FIELDS if f != "v"}}
    doc["payload"] = dict(env.payload)
    try:
        body = msgpack.packb(doc, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadMessage(f"payload cannot be encoded as msgpack: {exc}") from None
    if len(body) > MAX_BODY_BYTES:
        raise BadMessage(f"message {env.id} is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    return body


def decode(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Envelope:
    """Parse and validate a body; any problem raises ``BadMessage`` naming it."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadMessage(f"body must be bytes, got {type(body).__name__}")
    if len(body) > max_bytes:
        raise BadMessage(f"body is {len(body)} bytes, over the {max_bytes}-byte limit")
    doc = _unpack(bytes(body), max_bytes)
    if not isinstance(doc, dict):
        raise BadMessage(f"body must be a msgpack map, got {type(doc).__name__}")
    _check_fields(doc)
    return Envelope(**{k: doc[k] for k in _FIELDS if k != "v"})


def _unpack(body: bytes, max_bytes: int) -> Any:
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=100_000,
            max_map_len=100_000,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise BadMessage("body has trailing bytes after the msgpack document") from None
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise BadMessage(f"body is not valid msgpack: {type(exc).__name__}: {exc}") from None


def _check_fields(doc: dict) -> None:
    version = doc.get("v")
    if version != SCHEMA_VERSION:
        raise BadMessage(f"schema version {version!r} is not supported (this worker reads version {SCHEMA_VERSION})")
    missing = sorted(set(_FIELDS) - set(doc))
    if missing:
        raise BadMessage(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(doc) - set(_FIELDS))
    if unknown:
        raise BadMessage(f"unknown field(s): {', '.join(unknown)}")
    for name, kind in _FIELDS.items():
        value = doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadMessage(f"field {name!r} must be {kind.__name__}, got {type(value).__name__}")
