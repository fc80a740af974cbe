"""The nightly merchant analytics job.

Raw events (merchant, customer, view/cart/purchase, amount, time) for one day
sit in the ``events`` table under ``<date>/<16 hex digits>``. Phase ``map``
scans key ranges a slice at a time (``swarm.slices``) and writes per-slice
partial aggregates to ``partials``, as the run's own generation; the rest of
a long range is handed on, and at the end of the phase split among idle
threads when ``[split]`` is on. After the barrier, phase ``reduce`` folds each
bucket of merchants into ``merchant_daily``: orders, revenue, unique
customers, conversion. The summary is published only once its checks pass.
"""
from __future__ import annotations

import datetime
import hashlib
import random
import zlib
from typing import Any, Iterable, Mapping

from swarm import Chunk, Count, Job, Put, Retry, checks
from swarm.effects import Bytes, to_bytes
from swarm.errors import BadMessage
from swarm.keyrange import uniform_splits
from swarm.planning import region_chunks
from swarm.slices import slice_of
from swarm.table import apply_in_batches

EVENTS, PARTIALS, SUMMARY = "events", "partials", "merchant_daily"
BUCKETS = 16  # reduce partitions
MAX_ROWS = 20_000  # rows one scan slice handles before it hands the rest on (option ``slice_rows``)
SCAN_BATCH = 1000
HOT = "7f"  # a skewed day's hot keys, <date>/7f...: inside one chunk of any even plan of up to 256 chunks

job = Job("merchant_daily", params=("date",), description=__doc__.splitlines()[0])
job.table(EVENTS, ["e"])  # the input; `create_tables` pre-splits it for a generated day
job.table(PARTIALS, ["p"], intermediate=True)  # rows under <run>/: each run (or rerun) its own generation
job.table(SUMMARY, ["s"], published=True)  # readers see a run's summary once its checks pass
# A night whose summary is far from the usual is held, not published: the number of merchants and the
# orders within 30% of the median of the last 7 published nights, and every row whole.
job.check(checks.row_count(SUMMARY, tolerance=0.3))
job.check(checks.column_total(SUMMARY, "s:orders", tolerance=0.3))
job.check(checks.required_columns(SUMMARY, ["s:orders", "s:revenue", "s:customers", "s:conversion"]))


def day_prefix(date: str) -> bytes:
    return f"{date}/".encode()


def bucket_of(merchant: str) -> int:
    return zlib.crc32(merchant.encode()) % BUCKETS


# map ------------------------------------------------------------------------


@job.planner("map")
def plan_map(ctx) -> Iterable[Chunk]:
    """The day's keys in ``chunks`` ranges (default 32) that never cross a region boundary of ``events``."""
    return region_chunks(ctx.tables, EVENTS, prefix=day_prefix(ctx.params["date"]),
                         chunks=int(ctx.options.get("chunks", 32)))


def _check_scan(payload: Mapping[str, Any]) -> None:
    for key in ("start", "stop"):
        if not isinstance(payload.get(key), bytes):
            raise BadMessage(f"payload[{key!r}] must be bytes")


# ranges=EVENTS: its payloads are key ranges of the events, which Swarm may split at the end of the phase.
@job.stage("scan", phase="map", pool=4, batch=2, retry=Retry(max_attempts=5, base_delay=0.5), timeout=300,
           ranges=EVENTS, validate=_check_scan)
def scan(ctx, msg):
    """Aggregate one slice of a key range per merchant; the rest of the range is handed on."""
    rows, rest = slice_of(ctx, EVENTS, msg.payload, rows=int(ctx.options.get("slice_rows", MAX_ROWS)),
                          batch_size=SCAN_BATCH)
    totals: dict[str, dict] = {}
    for _, cells in rows:
        _fold_event(totals, cells)
    puts = [_partial_put(ctx, msg.chunk, m, t) for m, t in sorted(totals.items())]
    return [*puts, rest, Count("rows", len(rows))]  # rest: None once the range is done


def _fold_event(totals: dict[str, dict], cells: Mapping[bytes, bytes]) -> None:
    merchant = cells[b"e:merchant"].decode()
    t = totals.setdefault(merchant, {"views": 0, "carts": 0, "orders": 0, "revenue": 0, "customers": set()})
    kind = cells[b"e:type"]
    if kind == b"view":
        t["views"] += 1
    elif kind == b"cart":
        t["carts"] += 1
    elif kind == b"purchase":
        t["orders"] += 1
        t["revenue"] += int(cells[b"e:amount"])
        t["customers"].add(cells[b"e:customer"].decode())


def _partial_put(ctx, chunk: str, merchant: str, t: dict) -> Put:
    # Keyed by the slice (its chunk and ctx.slice), with deterministic bytes: a redelivered slice
    # rewrites the same cells, and no two slices, split or not, write the same row.
    row = ctx.output_key(f"{bucket_of(merchant):02d}", merchant, f"{chunk}.{ctx.slice}")
    return Put(PARTIALS, row, {
        "p:views": t["views"], "p:carts": t["carts"], "p:orders": t["orders"], "p:revenue": t["revenue"],
        "p:customers": "\n".join(sorted(t["customers"])),
    })


# reduce ------------------------------------------------------------------------


@job.planner("reduce")
def plan_reduce(ctx) -> Iterable[Chunk]:
    for b in range(BUCKETS):
        yield Chunk(f"b{b:02d}", {"bucket": b})


# A bucket's fold is short: a thread takes up to 4 waiting buckets at once and
# writes their summaries, records them done and acks them together.
@job.stage("reduce", phase="reduce", pool=2, batch=4, retry=Retry(max_attempts=5, base_delay=0.5), timeout=120)
def reduce(ctx, msg):
    """Fold the partials of one bucket into per-merchant daily summaries."""
    prefix = ctx.input_prefix(f"{msg.payload['bucket']:02d}")  # the map phase's output this run reads
    merged: dict[str, dict] = {}
    for key, cells in ctx.tables.scan(PARTIALS, prefix=prefix, batch_size=SCAN_BATCH):
        merchant = key[len(prefix):].split(b"/", 1)[0].decode()
        m = merged.setdefault(merchant, {"views": 0, "carts": 0, "orders": 0, "revenue": 0, "customers": set()})
        for name in ("views", "carts", "orders", "revenue"):
            m[name] += int(cells[f"p:{name}".encode()])
        if cells.get(b"p:customers"):
            m["customers"].update(cells[b"p:customers"].decode().split("\n"))
    date = ctx.params["date"]
    effects: list = [Put(SUMMARY, f"{date}/{merchant}", summary_cells(m)) for merchant, m in sorted(merged.items())]
    effects.append(Count("merchants", len(merged)))
    return effects


def summary_cells(m: Mapping[str, Any]) -> dict[Bytes, str]:  # not dict[str, str]: Put takes Mapping[Bytes, ...]
    """The summary row's cells, from totals with a set of purchasing customers."""
    conversion = m["orders"] / m["views"] if m["views"] else 0.0
    return {
        "s:orders": str(m["orders"]),
        "s:revenue": str(m["revenue"]),
        "s:customers": str(len(m["customers"])),
        "s:views": str(m["views"]),
        "s:carts": str(m["carts"]),
        "s:conversion": f"{conversion:.4f}",
    }


# set-up and checking ------------------------------------------------------------


def create_tables(tables, date: str, regions: int = 8) -> None:
    """Create the job's tables; ``events`` is pre-split into ``regions`` for the first date."""
    tables.create_table(EVENTS, ["e"], uniform_splits(day_prefix(date), regions))
    for spec in job.tables.values():
        if spec.name != EVENTS:
            tables.create_table(spec.name, spec.families)


def generate(tables, date: str, events: int, merchants: int = 50, customers: int = 2000, seed: int = 1,
             batch: int = 2000, hot: float = 0.0) -> int:
    """Write ``events`` deterministic raw events for ``date``; returns how many.

    ``hot``: the share of them keyed under ``<date>/7f`` (``HOT``), a skewed
    day: one chunk of the plan then holds that share of the rows, and more.
    """
    if not 0.0 <= hot <= 1.0:
        raise ValueError(f"hot must be a share between 0 and 1, got {hot}")
    rng = random.Random(f"{seed}/{date}")
    weights = [1 / (i + 1) for i in range(merchants)]  # a few big merchants, a long tail
    names = [f"m{i:05d}" for i in range(merchants)]
    day_start = int(datetime.datetime.fromisoformat(date).replace(tzinfo=datetime.timezone.utc).timestamp())

    def event(i: int) -> Put:
        key = hashlib.blake2b(f"{seed}/{date}/{i}".encode(), digest_size=8).hexdigest()
        if hot and int(key[-8:], 16) < hot * 2**32:  # decided by digits it keeps: the same events each time
            key = HOT + key[len(HOT):]
        kind = rng.choices(("view", "cart", "purchase"), (70, 20, 10))[0]
        return Put(EVENTS, f"{date}/{key}", {
            "e:merchant": rng.choices(names, weights)[0],
            "e:customer": f"c{rng.randrange(customers):06d}",
            "e:type": kind,
            "e:amount": rng.randrange(100, 20_000) if kind == "purchase" else 0,
            "e:ts": day_start + rng.randrange(86_400),
        }).normalized()

    return apply_in_batches(tables, (event(i) for i in range(events)), batch)


def reference(tables, date: str) -> dict[bytes, dict[bytes, bytes]]:
    """The summary computed the plain way, in one process, straight from the events."""
    totals: dict[str, dict] = {}
    prefix = day_prefix(date)
    for _, cells in tables.scan(EVENTS, prefix=prefix):
        _fold_event(totals, cells)
    return {
        f"{date}/{m}".encode(): {to_bytes(k): to_bytes(v) for k, v in summary_cells(t).items()}
        for m, t in totals.items()
    }


def summary(tables, date: str) -> dict[bytes, dict[bytes, bytes]]:
    """The summary rows the job wrote for ``date``."""
    return dict(tables.scan(SUMMARY, prefix=f"{date}/".encode()))
