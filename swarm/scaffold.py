"""``swarm new-job NAME``: a working job to start from, with sample data and tests that pass as written.

The job counts events by a key: phase ``map`` scans the day's rows of
``NAME_events`` in key ranges that follow the table's regions and writes
partial counts and totals per key, as the run's own generation of
``NAME_partials``; phase ``reduce`` folds each bucket of keys into
``NAME_daily``, a published table: readers see a run's result once its
checks pass.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from string import Template

from swarm.errors import ConfigError

SAMPLE_DATE = "2026-11-01"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

JOB = Template('''"""$name: a nightly job made by `swarm new-job`; change it to fit your data.

Input: table ``$events``, one row per event under ``<date>/<hex id>``, cells
``e:key`` (what to count by) and ``e:value`` (a whole number).
Phase ``map``: each chunk scans one key range of the day and writes, per key,
the count and total it saw to ``$partials``, under the run's id: each run
(or rerun) writes a generation of its own.
Phase ``reduce``: each bucket of keys folds the partials of the generation it
reads into ``$daily``: ``d:count`` and ``d:total`` per key and day, under
``<date>/<key>``. Readers see them once the run's checks pass.
"""
from __future__ import annotations

import zlib

from swarm import Chunk, Count, Job, Put, Retry, checks
from swarm.planning import region_chunks

EVENTS, PARTIALS, DAILY = "$events", "$partials", "$daily"
BUCKETS = 8  # reduce partitions

job = Job("$name", params=("date",), description="counts and totals of events per key, per day")
job.table(EVENTS, ["e"])  # the input
job.table(PARTIALS, ["p"], intermediate=True)  # rows under <run>/: each run, or rerun, its own generation
job.table(DAILY, ["d"], published=True)  # readers see a run's result only once its checks pass
# Checked before it is published, else the run is held: every row has both cells, and the number of keys is
# within 50% of the median of the last 7 published nights (not compared before 3 nights were published).
job.check(checks.required_columns(DAILY, ["d:count", "d:total"]))
job.check(checks.row_count(DAILY, tolerance=0.5))


def day_prefix(date: str) -> bytes:
    return f"{date}/".encode()


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


@job.planner("map")
def plan_map(ctx):
    """The day's keys in ``chunks`` ranges that never cross a region boundary of the input table."""
    return region_chunks(ctx.tables, EVENTS, prefix=day_prefix(ctx.params["date"]),
                         chunks=int(ctx.options.get("chunks", 8)))


@job.stage("scan", phase="map", pool=4, timeout=300, retry=Retry(max_attempts=5))
def scan(ctx, msg):
    """Count and total the events of one key range, per key."""
    seen: dict[str, list[int]] = {}
    for _, cells in ctx.tables.scan(EVENTS, msg.payload["start"], msg.payload["stop"]):
        counts = seen.setdefault(cells[b"e:key"].decode(), [0, 0])
        counts[0] += 1
        counts[1] += int(cells.get(b"e:value", b"0"))
    # Keyed by this run's generation and the chunk: a redelivered message writes the same cells again.
    puts = [Put(PARTIALS, ctx.output_key(f"{bucket_of(key):02d}", key, msg.chunk),
                {"p:count": count, "p:total": total})
            for key, (count, total) in sorted(seen.items())]
    return [*puts, Count("events", sum(count for count, _ in seen.values()))]


@job.planner("reduce")
def plan_reduce(ctx):
    for b in range(BUCKETS):
        yield Chunk(f"b{b:02d}", {"bucket": b})


@job.stage("reduce", phase="reduce", pool=2, timeout=120, retry=Retry(max_attempts=5))
def reduce(ctx, msg):
    """Fold one bucket's partials into the day's count and total per key."""
    prefix = ctx.input_prefix(f"{msg.payload['bucket']:02d}")  # the generation of phase map this run reads
    sums: dict[str, list[int]] = {}
    for row, cells in ctx.tables.scan(PARTIALS, prefix=prefix):
        key = row[len(prefix):].rsplit(b"/", 1)[0].decode()
        total = sums.setdefault(key, [0, 0])
        total[0] += int(cells[b"p:count"])
        total[1] += int(cells[b"p:total"])
    date = ctx.params["date"]
    puts = [Put(DAILY, f"{date}/{key}", {"d:count": count, "d:total": total})
            for key, (count, total) in sorted(sums.items())]
    return [*puts, Count("keys", len(sums))]


def summary(tables, date: str) -> dict[str, tuple[int, int]]:
    """What the job published for ``date``: (count, total) per key."""
    prefix = day_prefix(date)
    return {row[len(prefix):].decode(): (int(cells[b"d:count"]), int(cells[b"d:total"]))
            for row, cells in tables.scan(DAILY, prefix=prefix)}


def reference(tables, date: str) -> dict[str, tuple[int, int]]:
    """The same, computed plainly in one process: what the tests hold the job to."""
    out: dict[str, tuple[int, int]] = {}
    for _, cells in tables.scan(EVENTS, prefix=day_prefix(date)):
        key = cells[b"e:key"].decode()
        count, total = out.get(key, (0, 0))
        out[key] = (count + 1, total + int(cells.get(b"e:value", b"0")))
    return out
''')

TESTS = Template('''"""Tests of $name, as `swarm new-job` wrote them: run them with `pytest test_$name.py`."""
from pathlib import Path

from swarm import Chunk, Count, Put
from swarm.tabletools import load
from swarm.testing import call, fake_tables, plan, run_job

import $name as j

DATE = "$date"
SAMPLE = Path(__file__).with_name("${name}_sample.jsonl")


def events(*rows):
    """An in-memory table store with the job's tables and these (key, value) events of DATE."""
    return fake_tables({j.EVENTS: {f"{DATE}/{i:04x}": {"e:key": k, "e:value": v} for i, (k, v) in enumerate(rows)}},
                       j.job)


def test_scan_counts_and_totals_a_range_per_key():
    tables = events(("a", 2), ("b", 5), ("a", 3))
    got = call(j.scan, {"start": f"{DATE}/".encode(), "stop": f"{DATE}0".encode()}, tables=tables,
               params={"date": DATE}, chunk="r0000")
    run = f"$name@date={DATE}"
    assert got == [Put(j.PARTIALS, f"{run}/{j.bucket_of('a'):02d}/a/r0000", {"p:count": 2, "p:total": 5}),
                   Put(j.PARTIALS, f"{run}/{j.bucket_of('b'):02d}/b/r0000", {"p:count": 1, "p:total": 5}),
                   Count("events", 3)]


def test_reduce_folds_the_partials_of_the_generation_it_reads():
    bucket = j.bucket_of("a")
    run = f"$name@date={DATE}"
    rerun = f"{run}+r1"
    tables = fake_tables({j.PARTIALS: {f"{run}/{bucket:02d}/a/r0000": {"p:count": 2, "p:total": 5},
                                       f"{run}/{bucket:02d}/a/r0001": {"p:count": 1, "p:total": 4},
                                       f"{rerun}/{bucket:02d}/a/r0000": {"p:count": 7, "p:total": 70}}}, j.job)
    assert call(j.reduce, {"bucket": bucket}, tables=tables, params={"date": DATE}) == [
        Put(j.DAILY, f"{DATE}/a", {"d:count": 3, "d:total": 9}), Count("keys", 1)]
    # Rerun 2, from stage reduce, reads phase map's output of the run that last completed it: here, rerun 1.
    assert call(j.reduce, {"bucket": bucket}, tables=tables, run=f"{run}+r2", reads={"map": rerun}) == [
        Put(j.DAILY, f"{DATE}/a", {"d:count": 7, "d:total": 70}), Count("keys", 1)]


def test_the_map_plan_covers_the_day_in_chunks():
    chunks = plan(j.job, "map", tables=events(), params={"date": DATE}, options={"chunks": 4})
    assert len(chunks) == 4 and chunks[0].payload["start"] == f"{DATE}/".encode()
    assert [c.payload["stop"] for c in chunks][-1] == f"{DATE}0".encode()
    assert plan(j.job, "reduce")[0] == Chunk("b00", {"bucket": 0})


def test_the_whole_job_on_the_sample_data_matches_a_plain_computation():
    tables = fake_tables(job=j.job)
    load(tables, j.EVENTS, SAMPLE, progress=False)
    run = run_job(j.job, {"date": DATE}, tables, options={"chunks": 4})
    assert run.status == "done", run.error
    assert j.summary(tables, DATE) == j.reference(tables, DATE) != {}


def test_a_day_without_events_is_held_not_published():
    tables = fake_tables(job=j.job)
    run = run_job(j.job, {"date": DATE}, tables, options={"chunks": 2})
    assert run.status == "held" and "the result has no rows" in run.error
    assert j.summary(tables, DATE) == {}
''')

CONFIG = Template('''# Swarm's config for $name, as `swarm new-job` wrote it: embedded backends, files here.
[backends]
broker = "memory://"
ledger = "sqlite:///swarm.db"
tables = "embedded:///swarm-tables.db"

[jobs]
modules = ["$name"]
path = ["."]   # where the job's module is, from this file's directory

[options.$name]
chunks = 8
''')


def new_job(name: str, directory: Path, sample_rows: int = 500) -> list[Path]:
    """Write the job, its tests, sample data and (when there is none) a config; returns the files written."""
    if not _NAME.match(name):
        raise ConfigError(f"new-job: {name!r} must be a Python module name: lower case letters, digits and _, "
                          "starting with a letter")
    directory.mkdir(parents=True, exist_ok=True)
    names = {"name": name, "events": f"{name}_events", "partials": f"{name}_partials", "daily": f"{name}_daily",
             "date": SAMPLE_DATE}
    files = {directory / f"{name}.py": JOB.substitute(names),
             directory / f"test_{name}.py": TESTS.substitute(names),
             directory / f"{name}_sample.jsonl": sample(sample_rows)}
    existing = [str(p) for p in files if p.exists()]
    if existing:
        raise ConfigError(f"new-job: {', '.join(existing)} exist already; choose another name or directory")
    config = directory / "swarm.toml"
    if not config.exists():
        files[config] = CONFIG.substitute(names)
    for path, text in files.items():
        path.write_text(text)
    return list(files)


def sample(rows: int, date: str = SAMPLE_DATE, seed: int = 1) -> str:
    """JSON Lines of ``rows`` events of ``date``: a few keys often, many rarely, as real traffic looks."""
    rng = random.Random(seed)
    keys = [f"site{i:02d}.example" for i in range(12)]
    weights = [1 / (i + 1) for i in range(len(keys))]
    lines = []
    for i in range(rows):
        row = f"{date}/{hashlib.sha256(f'{seed}/{i}'.encode()).hexdigest()[:12]}"
        lines.append(json.dumps({"row": row, "e:key": rng.choices(keys, weights)[0], "e:value": rng.randint(1, 50)}))
    return "\n".join(lines) + "\n"
