import msgpack
import pytest
from hypothesis import given, strategies as st

from swarm.envelope import MAX_BODY_BYTES, SCHEMA_VERSION, Envelope, decode, encode
from swarm.errors import BadMessage

names = st.from_regex(r"[A-Za-z0-9_.:@=,+#-]{1,40}", fullmatch=True)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _env(**kw) -> Envelope:
    base = dict(job="j", run="j@date=2026-11-22", phase="map", stage="scan", chunk="r00001", seq="0", attempt=1,
                payload={"start": b"a", "stop": b"b"})
    return Envelope(**{**base, **kw})


def _doc(**changes) -> dict:
    doc = msgpack.unpackb(encode(_env()), raw=False)
    doc.update(changes)
    return doc


@given(job=names, run=names, phase=names, stage=names, chunk=names, seq=names,
       attempt=st.integers(1, 1000), payload=st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_round_trip(job, run, phase, stage, chunk, seq, attempt, payload):
    env = Envelope(job, run, phase, stage, chunk, seq, attempt, payload)
    assert decode(encode(env)) == env


def test_id_is_deterministic_and_ignores_attempt_and_payload():
    a = _env(attempt=1, payload={"x": 1})
    b = _env(attempt=4, payload={"x": 2})
    assert a.id == b.id == "j@date=2026-11-22/map/r00001/scan/0"
    assert _env(seq="1").id != a.id


@pytest.mark.parametrize("body, reason", [
    (b"\xc1", "not valid msgpack"),
    (b"", "not valid msgpack"),
    (msgpack.packb([1, 2, 3]), "must be a msgpack map"),
    (msgpack.packb("text"), "must be a msgpack map"),
    (encode(_env()) + b"\x00", "trailing bytes"),
    (msgpack.packb({1: 2}), "not valid msgpack"),  # strict_map_key refuses non-string keys
    (msgpack.packb(msgpack.ExtType(1, b"x")), "not valid msgpack"),
])
def test_refuses_bad_bytes(body, reason):
    with pytest.raises(BadMessage, match=reason):
        decode(body)


def test_refuses_non_bytes():
    with pytest.raises(BadMessage, match="must be bytes"):
        decode("a string")


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_refuses_wrong_schema_version(version):
    with pytest.raises(BadMessage, match="schema version"):
        decode(msgpack.packb(_doc(v=version)))


@pytest.mark.parametrize("field", ["job", "run", "phase", "stage", "chunk", "seq", "attempt", "payload"])
def test_refuses_missing_field(field):
    doc = _doc()
    del doc[field]
    with pytest.raises(BadMessage, match=f"missing field.*{field}"):
        decode(msgpack.packb(doc))


def test_refuses_unknown_field():
    with pytest.raises(BadMessage, match="unknown field.*extra"):
        decode(msgpack.packb(_doc(extra=1)))


@pytest.mark.parametrize("field, value", [
    ("job", 3), ("attempt", "1"), ("attempt", True), ("attempt", 0), ("payload", [1]),
    ("stage", ""), ("stage", "a/b"), ("chunk", "x" * 129), ("run", "has space"),
])
def test_refuses_wrong_types_and_values(field, value):
    with pytest.raises(BadMessage, match=field):
        decode(msgpack.packb(_doc(**{field: value})))


def test_refuses_oversize_before_decoding():
    body = encode(_env(payload={"blob": b"x" * 2000}))
    with pytest.raises(BadMessage, match="over the 1000-byte limit"):
        decode(body, max_bytes=1000)
    with pytest.raises(BadMessage, match="over the"):
        decode(b"\x00" * (MAX_BODY_BYTES + 1))


def test_encode_refuses_what_msgpack_cannot_carry():
    with pytest.raises(BadMessage, match="cannot be encoded"):
        encode(_env(payload={"when": object()}))
    with pytest.raises(BadMessage, match="over the"):
        encode(_env(payload={"blob": b"x" * (MAX_BODY_BYTES + 1)}))


def test_schema_version_is_in_the_body():
    assert msgpack.unpackb(encode(_env()), raw=False)["v"] == SCHEMA_VERSION
