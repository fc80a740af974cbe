"""Dead letters: moved into the ledger without loss, and replayed without changing the ledger on a failure."""
import pytest

from swarm import dlq
from swarm.errors import BackendError, ConfigError
from swarm.ledger import MessageState, RunStatus
from swarm.limits import MAX_DEAD_LETTER_BYTES
from tests.unit.test_runtime import RUN, dead_letters, deliver, envelope, planned, setup  # noqa: F401
from tests.unit.toyjob import job

SINK = "swarm.toy.sink"


@pytest.fixture
def dead_run(setup, ledger):
    """A run failed by one dead message on the sink, its letter collected into the ledger."""
    proc = setup({"1": "crash"})
    body = planned(ledger, envelope(n=1))
    for _ in range(3):
        deliver(proc, body=body)
    ledger.update_run(RUN, status="failed", error="1 dead", finished=True)
    return body


def test_collect_stores_every_letter_and_a_failing_store_loses_none(broker, ledger, dead_run, monkeypatch):
    broker.dead_letter(SINK, b"", "empty, behind the first")
    original = ledger.add_dead_letter
    monkeypatch.setattr(ledger, "add_dead_letter", lambda *a, **k: (_ for _ in ()).throw(BackendError("down")))
    with pytest.raises(BackendError):
        dlq.collect(broker, ledger, job)
    monkeypatch.setattr(ledger, "add_dead_letter", original)
    assert dlq.collect(broker, ledger, job) == 2
    assert [(d.message_id, d.body) for d in ledger.dead_letters()][1] == (None, b"")


def test_replay_publishes_before_it_changes_the_ledger(broker, ledger, dead_run, monkeypatch):
    dlq.collect(broker, ledger, job)
    [letter] = ledger.dead_letters()
    monkeypatch.setattr(broker, "outlives_process", True)  # as a shared broker: replay publishes

    def down(*args, **kwargs):
        raise BackendError("broker down")

    original_publish = broker.publish
    monkeypatch.setattr(broker, "publish", down)
    with pytest.raises(BackendError):
        dlq.replay(broker, ledger, [letter.id])
    assert ledger.counts(RUN) == {MessageState.DEAD: 1} and ledger.get_run(RUN).status == "failed"  # nothing changed
    assert [d.id for d in ledger.dead_letters()] == [letter.id]
    monkeypatch.setattr(broker, "publish", original_publish)
    waiting = broker.depth(SINK)  # the failed attempts' retries
    assert dlq.replay(broker, ledger, [letter.id]) == 1
    assert ledger.counts(RUN) == {MessageState.QUEUED: 1} and ledger.get_run(RUN).status == RunStatus.RUNNING
    assert ledger.dead_letters() == []
    assert broker.depth(SINK) == waiting + 1  # on its delay queue


def test_on_the_in_process_broker_replay_queues_in_the_ledger_for_the_next_run(broker, ledger, dead_run):
    dlq.collect(broker, ledger, job)
    [letter] = ledger.dead_letters()
    waiting = broker.depth(SINK)
    assert dlq.replay(broker, ledger, [letter.id]) == 1
    assert ledger.counts(RUN) == {MessageState.QUEUED: 1} and broker.depth(SINK) == waiting


def test_a_letter_stored_cut_is_listed_but_not_replayed(broker, ledger):
    broker.declare([SINK])
    broker.dead_letter(SINK, b"z" * (MAX_DEAD_LETTER_BYTES + 5), "too large")
    assert dlq.collect(broker, ledger, job) == 1
    [letter] = ledger.dead_letters()
    assert letter.truncated and letter.size == MAX_DEAD_LETTER_BYTES + 5
    with pytest.raises(ConfigError, match="cannot be replayed"):
        dlq.replay(broker, ledger, [letter.id])


PAYLOAD = {"bucket": 1, "raw": b"\x00\xffab", "name": "caf\u00e9\x1b[31m", "nested": {"k": [b"\x01", 2.5, None]}}


@pytest.fixture
def letters(ledger):
    """A dead letter that decodes, then one that does not."""
    import hashlib

    from swarm.envelope import Envelope, encode
    from swarm.signing import process_keys

    env = Envelope("toy", RUN, "map", "sink", "c1", payload=PAYLOAD)
    for body, reason, msg_id in ((encode(env, process_keys()), "failed 5 times", env.id),
                                 (b"\xc1junk", "body is not valid msgpack", None)):
        ledger.add_dead_letter(SINK, reason, body, msg_id, len(body), hashlib.sha256(body).hexdigest())
    return [d.id for d in ledger.dead_letters()], env


def test_show_decodes_an_envelope_marked_unverified_with_binary_shown_readably(ledger, letters, capsys):
    (decodes, _), env = letters
    dlq.print_one(ledger, decodes)
    out = capsys.readouterr().out
    assert "decoded, UNVERIFIED (its signature is not checked: a dead letter may be forged):\n" in out
    assert f"\n  job: toy\n  run: {RUN}\n  phase: map\n  stage: sink\n  chunk: c1\n  seq: 0\n" in out
    assert "  payload: {'bucket': 1, 'raw': b'\\x00\\xffab', " in out
    assert "'name': 'café\\x1b[31m'" in out and "\x1b" not in out  # control characters escaped
    assert "in hex" not in out


def test_show_gives_hex_only_for_a_body_that_does_not_decode(ledger, letters, capsys):
    (_, junk), _ = letters
    dlq.print_one(ledger, junk)
    out = capsys.readouterr().out
    assert out.rstrip().endswith("), not an envelope that decodes; in hex: c16a756e6b")
    assert "UNVERIFIED" not in out


def test_show_json_keeps_the_hex_and_adds_the_envelope_when_it_decodes(ledger, letters, capsys):
    import json

    (decodes, junk), env = letters
    dlq.print_one(ledger, decodes, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["body_hex"] and doc["envelope"] == {
        "signature_checked": False, "id": env.id, "job": "toy", "run": RUN, "phase": "map", "stage": "sink",
        "chunk": "c1", "seq": "0",
        "payload": {"bucket": 1, "raw": "b'\\x00\\xffab'", "name": "caf\u00e9\x1b[31m",
                    "nested": {"k": ["b'\\x01'", 2.5, None]}}}
    dlq.print_one(ledger, junk, as_json=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["body_hex"] == b"\xc1junk".hex() and "envelope" not in doc


def test_a_long_payload_is_cut_in_text_and_whole_in_json(ledger, capsys):
    import hashlib
    import json

    from swarm.envelope import Envelope, encode
    from swarm.signing import process_keys

    env = Envelope("toy", RUN, "map", "sink", "c2", payload={"rows": ["x" * 100] * 400})
    body = encode(env, process_keys())
    ledger.add_dead_letter(SINK, "r", body, env.id, len(body), hashlib.sha256(body).hexdigest())
    [letter] = ledger.dead_letters()
    dlq.print_one(ledger, letter.id)
    out = capsys.readouterr().out
    payload = out.split("  payload: ", 1)[1].splitlines()
    assert payload[0].startswith("{'rows': [") and all(line.startswith(" " * 12) for line in payload[1:])
    assert "characters in all; --json shows all)" in out
    dlq.print_one(ledger, letter.id, as_json=True)
    assert len(json.loads(capsys.readouterr().out)["envelope"]["payload"]["rows"]) == 400


def test_the_list_shows_reasons_with_brackets_as_written(ledger, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    ledger.add_dead_letter(SINK, 'KeyError: [b"e:amount"] [bold]x[/bold]\nTraceback ...', b"x", "[red]id")
    ledger.add_dead_letter(SINK, "", b"y", None)
    dlq.print_list(ledger.dead_letters())
    out = capsys.readouterr().out
    assert 'KeyError: [b"e:amount"] [bold]x[/bold]' in out and "[red]id" in out
