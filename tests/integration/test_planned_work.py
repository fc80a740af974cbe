"""Only planned work runs, on RabbitMQ, MariaDB and worker processes: hostile input changes nothing.

Messages are published straight into the stage queues, as anyone with
publish rights on the vhost could: for runs that do not exist, ids nobody
planned in a live run, late copies for a finished run, unsigned and badly
signed envelopes, and a stale copy from an earlier generation of a run.
Each is dead-lettered with its reason (a late copy of done work is just
skipped), and the summary, the counters and the run stay exactly right.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os

import msgpack
import pika
import pytest

from swarm import Delete, Put
from swarm.backends import open_tables
from swarm.broker import dead_letter_queue, stage_queue
from swarm.envelope import Envelope, encode
from swarm.exits import EXIT_FAILED
from swarm.ledger import MessageState, RunStatus
from swarm.limits import MAX_DEAD_LETTER_BYTES
from swarm.signing import SiteKeys
from tests.integration.test_recovery import _has_consumer
from tests.support.rabbitmq import amqp_url, ready
from tests.support.site import DATE, JOB, Site
from tests.support.waiting import wait_until
from workers.jobs import merchant_daily as md

EVENTS = 3_000
RUN = f"{JOB}@date={DATE}"
SCAN, REDUCE = stage_queue(JOB, "scan"), stage_queue(JOB, "reduce")
A_RANGE = {"start": DATE.encode() + b"/", "stop": DATE.encode() + b"0", "part": 0}  # the whole day


@pytest.fixture
def site(make_site) -> Site:
    return make_site(EVENTS, {"chunks": 8})


def publish(vhost: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish raw bodies, confirmed, over a connection of the test's own: no Swarm code on the way."""
    with contextlib.closing(pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))) as conn:
        channel = conn.channel()
        channel.confirm_delivery()
        for queue, body in messages:
            channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2))


def scan(run: str, chunk: str, keys: SiteKeys, payload: dict | None = None) -> bytes:
    return encode(Envelope(JOB, run, "map", "scan", chunk, payload=payload or A_RANGE), keys)


def unsigned(run: str, chunk: str) -> bytes:
    """An envelope as Swarm wrote them before signing: no signature at all."""
    return msgpack.packb({"v": 1, "job": JOB, "run": run, "phase": "map", "stage": "scan", "chunk": chunk,
                          "seq": "0", "attempt": 1, "payload": A_RANGE}, use_bin_type=True)


def serving(site: Site, workers: int = 1) -> None:
    """Start ``workers`` workers and wait until they consume: their queues exist then."""
    for _ in range(workers):
        site.start_worker()
    for queue in (SCAN, REDUCE):
        wait_until(lambda q=queue: _has_consumer(site.vhost, q), f"a worker consuming {queue}", timeout=60, every=0.1)


def live(site: Site) -> bool:
    """The master has planned and published the map phase."""
    return site.ledger().counts(RUN).get("queued", 0) > 0


def drained(site: Site) -> bool:
    return all(ready(site.vhost, q) == 0 for q in (SCAN, REDUCE))


def dead_letter_reasons(site: Site) -> list[str]:
    done = site.cli("dlq", "list", "--job", JOB, "--json")
    assert done.returncode == 0, done.stderr
    return [d["reason"] for d in json.loads(done.stdout)]


def finish(site: Site, master) -> None:
    assert master.wait(timeout=240) == 0, site.log_tail()
    assert_exact(site)


def assert_exact(site: Site) -> None:
    ledger = site.ledger()
    run = ledger.get_run(RUN)
    assert run.status == RunStatus.DONE, run.error
    assert ledger.counters(RUN) == {"rows": EVENTS, "merchants": 40}
    assert set(ledger.counts(RUN)) == {MessageState.DONE}
    written, expected = site.exact()
    assert written == expected and len(expected) == 40


def test_forged_unsigned_and_late_messages_are_rejected_and_change_nothing(site):
    keys = site.keys()
    serving(site, 2)
    before_any_run = [
        (SCAN, scan(f"{JOB}@date=2026-10-17", "r00000", keys)),  # a run that does not exist
        (SCAN, scan(RUN, "r00000", keys)),  # a run not yet opened: the very case that doubled a night
        (SCAN, unsigned(RUN, "r00001")),
        (SCAN, scan(RUN, "r00002", SiteKeys(os.urandom(32)))),  # signed, with a key the site does not hold
        (REDUCE, encode(Envelope(JOB, RUN, "reduce", "reduce", "b00", payload={"bucket": 0}), keys)),
    ]
    publish(site.vhost, before_any_run)
    wait_until(lambda: drained(site), "the workers to take the forgeries", timeout=60, every=0.1)
    assert site.ledger().get_run(RUN) is None  # nothing was recorded for them

    site.stop()  # while nobody consumes, the run is live for as long as the test needs
    master = site.start_master()
    wait_until(lambda: live(site), "the run to be live", timeout=120, every=0.1)
    publish(site.vhost, [(SCAN, scan(RUN, "r99999", keys))])  # an id nobody planned, in a live run
    serving(site, 2)
    finish(site, master)

    ledger = site.ledger()
    [late_copy] = [row[0] for row in ledger._rows("SELECT body FROM swarm_messages WHERE id = ?",
                                                  (f"{RUN}/map/r00003/scan/0",))]
    publish(site.vhost, [
        (SCAN, bytes(late_copy)),  # a copy of work already done: skipped
        (SCAN, scan(RUN, "r77777", keys)),  # new work for a finished run
        (REDUCE, encode(Envelope(JOB, RUN, "reduce", "reduce", "b99", payload={"bucket": 3}), keys)),
    ])
    wait_until(lambda: drained(site), "the workers to take the late messages", timeout=60, every=0.1)
    assert_exact(site)

    reasons = dead_letter_reasons(site)
    expected = ["not planned"] * 3 + ["unsigned"] + ["neither the current nor the previous site key"] \
        + ["not planned"] + ["not planned"] * 2
    assert len(reasons) == len(expected), reasons
    for want in set(expected):
        assert sum(want in r for r in reasons) == expected.count(want), (want, reasons)
    assert all(w.poll() is None for w in site.workers[-2:]), "the workers serve on"


def test_a_stale_copy_from_an_earlier_generation_of_a_run_is_rejected(site):
    """A night whose run failed has no publication: ``db prune`` removes it whole, and it is run again anew."""
    tables = open_tables(site.urls["tables"])
    poison = Put(md.PARTIALS, f"{RUN}/03/m-poison/x", {"p:views": "not a number"}).normalized()
    tables.apply([poison])  # bucket 3's reduce cannot fold it: retried, then dead, and the run fails
    serving(site)
    assert site.start_master().wait(timeout=240) == EXIT_FAILED, site.log_tail()
    ledger = site.ledger()
    assert ledger.get_run(RUN).status == RunStatus.FAILED and ledger.publication(RUN) is None
    [stale] = [bytes(r[0]) for r in ledger._rows("SELECT body FROM swarm_messages WHERE id = ?",
                                                 (f"{RUN}/map/r00001/scan/0",))]
    pruned = site.cli("db", "prune", "--older-than", "0")
    assert pruned.returncode == 0 and RUN in pruned.stdout, pruned.stderr
    assert ledger.get_run(RUN) is None
    # The run's generation of partials goes too (swarm generations cannot list a run the ledger lost).
    tables.apply([Delete(md.PARTIALS, row) for row, _ in tables.scan(md.PARTIALS, prefix=f"{RUN}/".encode())])
    tables.close()

    site.options["chunks"] = 16  # the night is run again, planned anew: r00001 now covers another range
    site.write_config()
    site.stop()
    master = site.start_master()
    wait_until(lambda: live(site), "the new run to be live", timeout=120, every=0.1)
    publish(site.vhost, [(SCAN, stale)])
    serving(site)
    finish(site, master)
    wait_until(lambda: drained(site), "the stale copy to be taken", timeout=60, every=0.1)
    assert_exact(site)  # the earlier generation's range was not folded in a second time
    reasons = dead_letter_reasons(site)
    stale_ones = [r for r in reasons if "differs from the one the ledger recorded" in r]
    assert len(stale_ones) == 1, reasons
    assert all("invalid literal for int()" in r for r in reasons if r not in stale_ones), reasons  # the poison's


def test_dead_letters_of_any_size_are_moved_into_the_ledger_and_none_is_lost(site):
    serving(site)
    keys = site.keys()
    huge = os.urandom(20 << 20)
    bad_field = encode(Envelope(JOB, RUN, "map", "scan", "r00000", payload=A_RANGE), keys)
    doc = msgpack.unpackb(bad_field, raw=False)
    inner = msgpack.unpackb(doc["env"], raw=False)
    inner["chunk"] = "x" * 900_000  # a bad value of 900 KB: the reason names it, without carrying it
    doc["env"] = msgpack.packb(inner, use_bin_type=True)
    doc["kid"], doc["sig"] = keys.sign(doc["env"])
    publish(site.vhost, [
        (dead_letter_queue(SCAN), huge),  # as RabbitMQ's own dead-lettering leaves a body: whole
        (dead_letter_queue(SCAN), b""),  # and a small one behind it
        (SCAN, msgpack.packb(doc, use_bin_type=True)),
        (SCAN, huge),  # the worker dead-letters this one itself
    ])
    wait_until(lambda: ready(site.vhost, SCAN) == 0, "the worker to reject its two", timeout=60, every=0.1)
    reasons = dead_letter_reasons(site)
    letters = {d.sha256: d for d in site.ledger().dead_letters()}
    assert len(letters) == 3 and len(reasons) == 4  # the huge body twice, the same digest
    whole = [d for d in site.ledger().dead_letters() if d.sha256 == hashlib.sha256(huge).hexdigest()]
    assert len(whole) == 2 and all(d.size == 20 << 20 and len(d.body) == MAX_DEAD_LETTER_BYTES for d in whole)
    assert any(d.size == 0 for d in letters.values())
    [field] = [r for r in reasons if "field 'chunk'" in r]
    assert len(field) < 400
    assert ready(site.vhost, dead_letter_queue(SCAN)) == 0
    log = "".join(p.read_text(errors="replace") for p in site.logs.iterdir())
    assert "reconnect" not in log and "FRAME_ERROR" not in log, "the worker kept its connection"
    refused = site.cli("dlq", "replay", str(whole[0].id))
    assert refused.returncode == 2 and "cannot be replayed" in refused.stderr
