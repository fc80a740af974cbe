"""A job with two stages in its first phase, for reruns from inside a phase, and a param that is not a date.

Phase ``map``: ``split`` reads one range of a region's sales and sends each
shop's amounts on to ``fold``, which writes the shop's partial total as the
run's generation. Phase ``reduce`` sums the partials of a shop bucket into
the published ``tally_totals``.
"""
import zlib

from swarm import Chunk, Count, Job, Put, Send, checks
from swarm.keyrange import uniform_splits

SALES, PARTIALS, TOTALS = "tally_sales", "tally_partials", "tally_totals"
BUCKETS = 4

job = Job("tally", params=("region",))
job.table(SALES, ["s"])
job.table(PARTIALS, ["p"], intermediate=True)
job.table(TOTALS, ["t"], published=True)
job.check(checks.required_columns(TOTALS, ["t:total"]))
calls = {"split": 0, "fold": 0}  # in this process


def _bucket(shop: str) -> int:
    return zlib.crc32(shop.encode()) % BUCKETS


@job.planner("map")
def plan_map(ctx):
    bounds = [f"{ctx.params['region']}/".encode(), *uniform_splits(f"{ctx.params['region']}/".encode(), 4)]
    ends = [*bounds[1:], f"{ctx.params['region']}0".encode()]
    for i, (start, stop) in enumerate(zip(bounds, ends, strict=True)):
        yield Chunk(f"r{i}", {"start": start, "stop": stop})


@job.stage("split", phase="map", pool=2, next=("fold",))
def split(ctx, msg):
    calls["split"] += 1
    amounts: dict[str, list[int]] = {}
    for _, cells in ctx.tables.scan(SALES, msg.payload["start"], msg.payload["stop"]):
        amounts.setdefault(cells[b"s:shop"].decode(), []).append(int(cells[b"s:amount"]))
    return [Send("fold", {"shop": shop, "amounts": values}, key=shop) for shop, values in sorted(amounts.items())]


@job.stage("fold", phase="map", pool=2)
def fold(ctx, msg):
    calls["fold"] += 1
    # options.fold_bug: a bug in fold (every partial doubled), fixed by leaving the option out.
    total = sum(msg.payload["amounts"]) * (2 if ctx.options.get("fold_bug") else 1)
    shop = msg.payload["shop"]
    return Put(PARTIALS, ctx.output_key(_bucket(shop), shop, msg.chunk), {"p:total": total})


@job.planner("reduce")
def plan_reduce(ctx):
    for b in range(BUCKETS):
        yield Chunk(f"b{b}", {"bucket": b})


@job.stage("reduce", phase="reduce", pool=2)
def reduce(ctx, msg):
    prefix = ctx.input_prefix(msg.payload["bucket"])
    totals: dict[str, int] = {}
    for key, cells in ctx.tables.scan(PARTIALS, prefix=prefix):
        shop = key[len(prefix):].split(b"/", 1)[0].decode()
        totals[shop] = totals.get(shop, 0) + int(cells[b"p:total"])
    region = ctx.params["region"]
    return [Put(TOTALS, f"{region}/{shop}", {"t:total": total}) for shop, total in sorted(totals.items())] + \
        [Count("shops", len(totals))]


def create_tables(tables) -> None:
    for spec in job.tables.values():
        tables.create_table(spec.name, spec.families)


def load(tables, region: str, sales: dict[str, tuple[str, int]]) -> None:
    """``sales``: {sale id (hex): (shop, amount)}."""
    tables.apply([Put(SALES, f"{region}/{sid}", {"s:shop": shop, "s:amount": amount}).normalized()
                  for sid, (shop, amount) in sales.items()])


def reference(tables, region: str) -> dict[bytes, dict[bytes, bytes]]:
    totals: dict[str, int] = {}
    for _, cells in tables.scan(SALES, prefix=f"{region}/".encode()):
        shop = cells[b"s:shop"].decode()
        totals[shop] = totals.get(shop, 0) + int(cells[b"s:amount"])
    return {f"{region}/{shop}".encode(): {b"t:total": str(t).encode()} for shop, t in totals.items()}


def published(tables, region: str) -> dict[bytes, dict[bytes, bytes]]:
    return dict(tables.scan(TOTALS, prefix=f"{region}/".encode()))
