import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm.envelope import MAX_BODY_BYTES, SCHEMA_VERSION, Envelope, decode, encode, peek
from swarm.errors import BadMessage
from swarm.signing import SiteKeys

KEYS = SiteKeys(b"k" * 32)
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


def _outer(body: bytes) -> dict:
    return msgpack.unpackb(body, raw=False)


def _inner(**changes) -> dict:
    doc = msgpack.unpackb(_outer(encode(_env(), KEYS))["env"], raw=False)
    doc.update(changes)
    return doc


def _signed(inner: dict, keys: SiteKeys = KEYS, **outer_changes) -> bytes:
    """A body carrying ``inner`` with a good signature: what a key holder could send."""
    data = msgpack.packb(inner, use_bin_type=True)
    kid, sig = keys.sign(data)
    return msgpack.packb({"v": SCHEMA_VERSION, "kid": kid, "sig": sig, "env": data, **outer_changes},
                         use_bin_type=True)


@given(job=names, run=names, phase=names, stage=names, chunk=names, seq=names,
       payload=st.dictionaries(st.text(max_size=10), values, max_size=5))
def test_round_trip(job, run, phase, stage, chunk, seq, payload):
    env = Envelope(job, run, phase, stage, chunk, seq, 1, payload)
    assert decode(encode(env, KEYS), KEYS) == env


def test_the_attempt_does_not_travel():
    """The ledger counts deliveries; a copy on the wire is the same bytes whatever its attempt."""
    assert encode(_env(attempt=3), KEYS) == encode(_env(attempt=1), KEYS)
    assert decode(encode(_env(attempt=3), KEYS), KEYS).attempt == 1


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
    (encode(_env(), KEYS) + b"\x00", "trailing bytes"),
    (msgpack.packb({1: 2}), "not valid msgpack"),  # strict_map_key refuses non-string keys
    (msgpack.packb(msgpack.ExtType(1, b"x")), "not valid msgpack"),
])
def test_refuses_bad_bytes(body, reason):
    with pytest.raises(BadMessage, match=reason):
        decode(body, KEYS)


def test_refuses_non_bytes():
    with pytest.raises(BadMessage, match="must be bytes"):
        decode("a string", KEYS)


def test_an_unsigned_envelope_of_the_old_version_is_refused_as_such():
    old = msgpack.packb({"v": 1, "job": "j", "run": "j@date=x", "phase": "map", "stage": "scan", "chunk": "c",
                         "seq": "0", "attempt": 1, "payload": {}})
    with pytest.raises(BadMessage, match="schema version 1 .an unsigned envelope"):
        decode(old, KEYS)


@pytest.mark.parametrize("version", [0, 3, "2", None])
def test_refuses_wrong_schema_version(version):
    with pytest.raises(BadMessage, match="schema version"):
        decode(_signed(_inner(), v=version), KEYS)


@pytest.mark.parametrize("field, value", [("kid", 3), ("sig", "text"), ("env", "text")])
def test_refuses_a_malformed_outer_map(field, value):
    with pytest.raises(BadMessage, match=f"field '{field}'"):
        decode(_signed(_inner(), **{field: value}), KEYS)


def test_refuses_a_signature_of_other_contents():
    body = _outer(encode(_env(), KEYS))
    body["env"] = msgpack.packb(_inner(payload={"start": b"a", "stop": b"zzz"}), use_bin_type=True)
    with pytest.raises(BadMessage, match="bad signature"):
        decode(msgpack.packb(body, use_bin_type=True), KEYS)


def test_refuses_a_key_it_does_not_hold_and_names_the_key_only_by_id():
    other = SiteKeys(b"x" * 40)
    with pytest.raises(BadMessage, match="neither the current nor the previous") as caught:
        decode(encode(_env(), other), KEYS)
    assert b"x" * 40 not in str(caught.value).encode() and "xxxxxxxx" not in str(caught.value)


def test_a_forged_kid_with_a_wrong_signature_is_refused():
    body = _outer(encode(_env(), KEYS))
    body["sig"] = b"\0" * 32
    with pytest.raises(BadMessage, match="bad signature"):
        decode(msgpack.packb(body, use_bin_type=True), KEYS)


def test_rotation_accepts_the_previous_key_and_signs_with_the_current():
    old, new = b"o" * 32, b"n" * 32
    signed_before = encode(_env(), SiteKeys(old))
    rotating = SiteKeys(new, previous=old)
    assert decode(signed_before, rotating) == _env()
    assert _outer(encode(_env(), rotating))["kid"] == SiteKeys(new).current_id
    with pytest.raises(BadMessage, match="neither"):
        decode(signed_before, SiteKeys(new))  # the rotation is over: the old key is gone


def test_the_signature_is_checked_before_the_contents_are_parsed():
    deep = b"\x91" * 100_000 + b"\x00"  # nested lists, deeper than the decoder allows
    body = msgpack.packb({"v": SCHEMA_VERSION, "kid": KEYS.current_id, "sig": b"\0" * 32, "env": deep},
                         use_bin_type=True)
    with pytest.raises(BadMessage, match="bad signature"):
        decode(body, KEYS)


def test_deep_nesting_is_refused_with_a_reason_that_says_so():
    with pytest.raises(BadMessage, match="StackError: nested deeper than the decoder allows"):
        decode(b"\x91" * 100_000 + b"\x00", KEYS)
    with pytest.raises(BadMessage, match="StackError: nested deeper"):
        decode(_signed_raw(b"\x91" * 100_000 + b"\x00"), KEYS)


def _signed_raw(data: bytes) -> bytes:
    kid, sig = KEYS.sign(data)
    return msgpack.packb({"v": SCHEMA_VERSION, "kid": kid, "sig": sig, "env": data}, use_bin_type=True)


@pytest.mark.parametrize("field", ["job", "run", "phase", "stage", "chunk", "seq", "payload"])
def test_refuses_missing_field(field):
    doc = _inner()
    del doc[field]
    with pytest.raises(BadMessage, match=f"missing field.*{field}"):
        decode(_signed(doc), KEYS)


def test_refuses_unknown_field():
    with pytest.raises(BadMessage, match="unknown field.*extra"):
        decode(_signed(_inner(extra=1)), KEYS)


@pytest.mark.parametrize("field, value", [
    ("job", 3), ("payload", [1]), ("stage", ""), ("stage", "a/b"), ("chunk", "x" * 129), ("run", "has space"),
])
def test_refuses_wrong_types_and_values(field, value):
    with pytest.raises(BadMessage, match=field):
        decode(_signed(_inner(**{field: value})), KEYS)


def test_a_huge_bad_value_is_named_without_being_carried():
    with pytest.raises(BadMessage) as caught:
        decode(_signed(_inner(run="r" * 900_000)), KEYS)
    assert "field 'run'" in str(caught.value) and len(str(caught.value)) < 300


def test_refuses_oversize_before_decoding():
    body = encode(_env(payload={"blob": b"x" * 2000}), KEYS)
    with pytest.raises(BadMessage, match="over the 1000-byte limit"):
        decode(body, KEYS, max_bytes=1000)
    with pytest.raises(BadMessage, match="over the"):
        decode(b"\x00" * (MAX_BODY_BYTES + 1), KEYS)


def test_encode_refuses_what_msgpack_cannot_carry():
    with pytest.raises(BadMessage, match="cannot be encoded"):
        encode(_env(payload={"when": object()}), KEYS)
    with pytest.raises(BadMessage, match="over the"):
        encode(_env(payload={"blob": b"x" * (MAX_BODY_BYTES + 1)}), KEYS)


def test_peek_reads_without_checking_the_signature():
    assert peek(encode(_env(), SiteKeys(b"z" * 32))) == _env()
    assert peek(b"\xc1garbage") is None


def test_keys_are_never_shown():
    keys = SiteKeys(b"s3cret-" * 6, previous=b"old-s3cret-" * 4)
    assert "s3cret" not in repr(keys)
    with pytest.raises(Exception, match="at least 32"):
        SiteKeys(b"short")
