"""Case 7: what only-planned-work costs per message: signing, and the ledger's record of children.

Signing: each message is signed once where it is made (the master, or its
parent's worker) and checked once where it is delivered. Measured here in
one process over ``n`` envelopes like the no-op job's: encode and decode
with the signature, against the same contents as plain msgpack (what an
unsigned envelope cost). Alternating rounds; the medians are reported.

Children's rows: a parent's complete records its children, with their
parent and body digest, in the transaction that marks it done, so that a
child is known before anything publishes it. Measured on the site's
MariaDB as grouped completes of ``batch`` parents, each with one child,
against the same completes of parents with no child; alternating batches.
"""
from __future__ import annotations

import statistics
import time

import msgpack

from swarm.envelope import Envelope, decode, encode
from swarm.ledger import ClaimRequest, Completion, Message
from tests.support.site import Site

JOB = "noop_pipeline"
ROUNDS = 5


def run(site: Site, n: int = 20_000, batches: int = 40, batch: int = 64) -> dict:
    return {"signing": signing(site, n), "children": children(site, batches, batch)}


def signing(site: Site, n: int) -> dict:
    keys = site.keys()
    envs = [Envelope(JOB, f"{JOB}@date=2030-04-01", "main", "b", f"c{i:07d}", "0.0", 1, {}) for i in range(n)]
    signed, plain = [], []
    for _ in range(ROUNDS):
        signed.append(_per_message(lambda: [decode(encode(e, keys), keys) for e in envs], n))
        plain.append(_per_message(lambda: [_plain_decode(_plain_encode(e)) for e in envs], n))
    us_signed, us_plain = statistics.median(signed) * 1e6, statistics.median(plain) * 1e6
    body = encode(envs[0], keys)
    return {"messages": n, "us_signed": us_signed, "us_plain": us_plain, "us_added": us_signed - us_plain,
            "bytes_signed": len(body), "bytes_plain": len(_plain_encode(envs[0]))}


def _plain_encode(env: Envelope) -> bytes:
    doc = {"v": 1, "job": env.job, "run": env.run, "phase": env.phase, "stage": env.stage, "chunk": env.chunk,
           "seq": env.seq, "attempt": env.attempt, "payload": dict(env.payload)}
    return msgpack.packb(doc, use_bin_type=True)


def _plain_decode(body: bytes) -> Envelope:
    doc = msgpack.unpackb(body, raw=False, strict_map_key=True, max_str_len=1 << 20, max_bin_len=1 << 20,
                          max_array_len=100_000, max_map_len=100_000, max_ext_len=0)
    doc.pop("v")
    return Envelope(**doc)


def _per_message(work, n: int) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) / n


def children(site: Site, batches: int, batch: int) -> dict:
    """Seconds per message of grouped completes with one child each, and with none, on the site's ledger."""
    keys, ledger = site.keys(), site.ledger()
    run = f"{JOB}@date=2030-04-02"
    ledger.open_run(run, JOB, {"date": "2030-04-02"})
    with_kids, without = [], []
    try:
        for b in range(batches):
            for kids, times in ((True, with_kids), (False, without)):
                times.append(_complete_batch(ledger, keys, run, f"{b:04d}{'k' if kids else 'n'}", batch, kids))
    finally:
        ledger.close()
    ms_with, ms_without = statistics.median(with_kids) * 1e3, statistics.median(without) * 1e3
    return {"batches": batches, "batch": batch, "ms_per_msg_with_child": ms_with,
            "ms_per_msg_without": ms_without, "ms_per_child_row": ms_with - ms_without}


def _complete_batch(ledger, keys, run: str, tag: str, size: int, kids: bool) -> float:
    parents = [_message(keys, run, "a", f"{tag}{i:03d}", "0") for i in range(size)]
    ledger.save_plan(run, "main", parents)
    claims = ledger.claim_batch([ClaimRequest(run, "main", m) for m in parents], "bench", 60.0)
    calls = [Completion(m.id, c.token, run, "main", [_message(keys, run, "b", m.chunk, "0.0")] if kids else [], {})
             for m, c in zip(parents, claims)]
    started = time.perf_counter()
    ledger.complete_batch(calls)
    return (time.perf_counter() - started) / size


def _message(keys, run: str, stage: str, chunk: str, seq: str) -> Message:
    env = Envelope(JOB, run, "main", stage, chunk, seq, 1, {})
    return Message(env.id, stage, chunk, encode(env, keys))
