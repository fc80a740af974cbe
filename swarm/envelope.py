"""The message envelope: what travels on every stage queue, as msgpack."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import msgpack

from swarm.errors import BadMessage, describe
from swarm.signing import SiteKeys

SCHEMA_VERSION = 2  # 2: signed; the fields travel inside, as the signed bytes
MAX_BODY_BYTES = 1 << 20  # checked before decoding; a stage may lower it
MAX_ID_CHARS = 255  # the ledger's key column
SHOWN_CHARS = 60  # of a bad value, in an error: enough to recognise it, never a whole payload

_NAME = re.compile(r"^[A-Za-z0-9_.:@=,+#-]{1,128}$")
_NAME_FIELDS = ("job", "run", "phase", "stage", "chunk", "seq")
_FIELDS = {
    "job": str,
    "run": str,
    "phase": str,
    "stage": str,
    "chunk": str,
    "seq": str,
    "payload": dict,
}
_OUTER = {"v": int, "kid": str, "sig": bytes, "env": bytes}


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One unit of work for one stage.

    ``id`` is deterministic, made of (run, phase, chunk, stage, seq): the same
    work always has the same id, which is what lets workers skip duplicates.
    ``attempt`` is not carried on the wire: a worker sets it from the
    ledger's count of deliveries before the handler sees the message.
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

    def child(self, stage: str, payload: Mapping[str, Any], seq: str) -> "Envelope":
        return dataclasses.replace(self, stage=stage, payload=payload, seq=seq, attempt=1)

    def __post_init__(self) -> None:
        for name in _NAME_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise BadMessage(f"field {name!r} must be 1-128 characters of [A-Za-z0-9_.:@=,+#-], got {shown(value)}")
        if not isinstance(self.attempt, int) or isinstance(self.attempt, bool) or self.attempt < 1:
            raise BadMessage(f"field 'attempt' must be a positive integer, got {shown(self.attempt)}")
        if not isinstance(self.payload, Mapping):
            raise BadMessage(f"field 'payload' must be a map, got {type(self.payload).__name__}")
        if len(self.id) > MAX_ID_CHARS:
            raise BadMessage(f"message id is longer than {MAX_ID_CHARS} characters: {self.id[:SHOWN_CHARS]}...")


def shown(value: Any) -> str:
    """``repr(value)`` cut to ``SHOWN_CHARS``: errors name a bad value without carrying it whole."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def encode(env: Envelope, keys: SiteKeys) -> bytes:
    """Serialise and sign with the current site key; refuses payloads msgpack cannot carry."""
    doc = {f: getattr(env, f) for f in _FIELDS}
    doc["payload"] = dict(env.payload)
    try:
        inner = msgpack.packb(doc, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadMessage(f"payload cannot be encoded as msgpack: {describe(exc)}") from None
    kid, sig = keys.sign(inner)
    body: bytes = msgpack.packb({"v": SCHEMA_VERSION, "kid": kid, "sig": sig, "env": inner}, use_bin_type=True)
    if len(body) > MAX_BODY_BYTES:
        raise BadMessage(f"message {env.id} is {len(body)} bytes, over the {MAX_BODY_BYTES}-byte limit")
    return body


def decode(body: bytes, keys: SiteKeys, max_bytes: int = MAX_BODY_BYTES) -> Envelope:
    """Check the signature, then parse and validate; any problem raises ``BadMessage`` naming it.

    Nothing of an envelope is parsed before its signature has been checked
    but the small outer map that carries it.
    """
    outer = _outer(body, max_bytes)
    keys.verify(outer["kid"], outer["sig"], outer["env"])
    return _envelope(outer["env"], max_bytes)


def peek(body: bytes, max_bytes: int = MAX_BODY_BYTES) -> Envelope | None:
    """The envelope in ``body`` WITHOUT checking its signature, for showing a dead letter; None if unreadable."""
    try:
        return _envelope(_outer(body, max_bytes)["env"], max_bytes)
    except BadMessage:
        return None


def _outer(body: bytes, max_bytes: int) -> dict[str, Any]:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadMessage(f"body must be bytes, got {type(body).__name__}")
    if len(body) > max_bytes:
        raise BadMessage(f"body is {len(body)} bytes, over the {max_bytes}-byte limit")
    doc = _unpack(bytes(body), max_bytes, max_container=16)  # room for a version-1 map, to say what it is
    if not isinstance(doc, dict):
        raise BadMessage(f"body must be a msgpack map, got {type(doc).__name__}")
    version = doc.get("v")
    if version != SCHEMA_VERSION:
        unsigned = " (an unsigned envelope)" if version == 1 else ""
        raise BadMessage(f"schema version {shown(version)}{unsigned} is not supported: this worker reads signed "
                         f"envelopes of version {SCHEMA_VERSION}")
    _check_fields(doc, _OUTER, "envelope")
    return doc


def _envelope(inner: bytes, max_bytes: int) -> Envelope:
    doc = _unpack(inner, max_bytes, max_container=100_000)
    if not isinstance(doc, dict):
        raise BadMessage(f"signed contents must be a msgpack map, got {type(doc).__name__}")
    _check_fields(doc, _FIELDS, "signed contents")
    return Envelope(**doc)


def _unpack(body: bytes, max_bytes: int, max_container: int) -> Any:
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_container,
            max_map_len=max_container,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise BadMessage("body has trailing bytes after the msgpack document") from None
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise BadMessage(f"body is not valid msgpack: {describe(exc)}") from None


def _check_fields(doc: dict[str, Any], fields: Mapping[str, type], where: str) -> None:
    if doc.keys() == fields.keys():  # the usual case, with no sets to build
        for name, kind in fields.items():
            value = doc[name]
            if type(value) is not kind and (not isinstance(value, kind) or kind is int and isinstance(value, bool)):
                raise BadMessage(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
        return
    missing = sorted(set(fields) - set(doc))
    if missing:
        raise BadMessage(f"{where}: missing field(s): {', '.join(missing)}")
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise BadMessage(f"{where}: unknown field(s): {shown(', '.join(map(str, unknown)))}")
    for name, kind in fields.items():
        value = doc[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadMessage(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
