"""Slices (swarm.slices): a key range a slice at a time, its identity, and the rest split at a phase's tail."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from master.commands import settings as master_settings
from swarm import Chunk, Continue, Count, Job, Put, config
from swarm.brokers.memory import MemoryBroker
from swarm.effects import Effects
from swarm.envelope import Envelope, decode
from swarm.errors import Abort, ConfigError, PluginError
from swarm.keyrange import range_cuts
from swarm.signing import process_keys
from swarm.slices import (
    HandOn,
    SplitSettings,
    estimated_rows,
    is_part,
    next_slice,
    part_of,
    slice_of,
    split_ranges,
)
from swarm.table import prefix_stop
from swarm.testing import call, fake_tables, run_job

DAY = b"2026-11-22/"
RANGE = {"start": DAY, "stop": prefix_stop(DAY)}

# A small job that sums values per key, a slice of 3 rows at a time (option "rows"), keyed by slice.
job = Job("sums", params=("date",))
job.table("values", ["v"])
job.table("sums_partials", ["p"], intermediate=True)
job.table("sums_daily", ["d"])


@job.planner("map")
def plan_map(ctx):
    return [Chunk("all", dict(RANGE))]


@job.stage("scan", phase="map", ranges="values")
def scan(ctx, msg):
    rows, rest = slice_of(ctx, "values", msg.payload, rows=int(ctx.options.get("rows", 3)))
    sums = Counter()
    for _, cells in rows:
        sums[cells[b"v:key"].decode()] += int(cells[b"v:n"])
    puts = [Put("sums_partials", ctx.output_key(key, f"{msg.chunk}.{ctx.slice}"), {"p:n": n})
            for key, n in sorted(sums.items())]
    return [*puts, rest, Count("rows", len(rows))]


@job.planner("reduce")
def plan_reduce(ctx):
    return [Chunk("all", {})]


@job.stage("reduce", phase="reduce")
def reduce(ctx, msg):
    prefix = ctx.input_prefix()
    sums = Counter()
    for key, cells in ctx.tables.scan("sums_partials", prefix=prefix):
        sums[key[len(prefix):].split(b"/", 1)[0].decode()] += int(cells[b"p:n"])
    return [Put("sums_daily", k, {"d:n": n}) for k, n in sums.items()]


def values(n: int, keys: int = 4):
    """``n`` rows of the day with hex keys spread evenly, each a value for one of ``keys`` keys."""
    rows = {DAY + f"{i * 0xFFFF // n:04x}".encode(): {"v:key": f"k{i % keys}", "v:n": i} for i in range(n)}
    return fake_tables({"values": rows}, job)


def expected(tables) -> dict[bytes, dict[bytes, bytes]]:
    sums = Counter()
    for _, cells in tables.scan("values"):
        sums[cells[b"v:key"].decode()] += int(cells[b"v:n"])
    return {k.encode(): {b"d:n": str(n).encode()} for k, n in sums.items()}


# the slice identity ----------------------------------------------------------------


def test_a_slice_is_named_by_where_it_came_from():
    assert [next_slice(s) for s in ("0", "0+1", "0+9", "0+2:1", "0+2:1+4", "p1", "0.1")] == [
        "0+1", "0+2", "0+10", "0+2:1+1", "0+2:1+5", "p1+1", "0.1+1"]
    assert part_of("0+2", 3) == "0+2:3" and is_part("0+2:3+1") and not is_part("0+2")


# slice_of --------------------------------------------------------------------------


def test_slice_of_takes_the_first_rows_and_hands_on_the_rest():
    tables = values(7)
    keys = [k for k, _ in tables.scan("values")]
    payload = {**RANGE, "part": 0}
    rows, rest = slice_of(_ctx(tables), "values", payload, rows=3)
    assert [k for k, _ in rows] == keys[:3]
    assert rest == Continue({"start": keys[3], "stop": RANGE["stop"], "part": 0})  # the rest of the payload kept
    rows, rest = slice_of(_ctx(tables), "values", rest.payload, rows=3)
    assert [k for k, _ in rows] == keys[3:6] and rest.payload["start"] == keys[6]
    rows, rest = slice_of(_ctx(tables), "values", rest.payload, rows=3)
    assert [k for k, _ in rows] == keys[6:] and rest is None  # never handed on empty
    assert slice_of(_ctx(tables), "values", {**RANGE, "start": keys[4]}, rows=3).rest is None  # exactly 3 left


def test_a_rest_carries_an_estimate_of_its_rows_from_the_slice_before_it():
    rows, rest = slice_of(_ctx(values(4000)), "values", RANGE, rows=1000)
    assert len(rows) == 1000 and 2900 < rest.estimate < 3100
    assert rest == Continue(rest.payload) and rest.payload == {**RANGE, "start": rest.payload["start"]}


def test_slice_of_refuses_what_is_not_a_range_or_a_count():
    with pytest.raises(Abort, match="bytes 'start' and 'stop'"):
        slice_of(_ctx(values(1)), "values", {"start": "text", "stop": b""}, rows=3)
    with pytest.raises(ValueError, match="positive number of rows"):
        slice_of(_ctx(values(1)), "values", RANGE, rows=0)


def test_call_shows_a_slice_and_its_rest():
    tables = values(5)
    effects = call(scan, RANGE, tables=tables, slice="0+4", params={"date": "2026-11-22"})
    run = "sums@date=2026-11-22"
    assert effects[:3] == [Put("sums_partials", f"{run}/k{i}/c0.0+4", {"p:n": i}) for i in range(3)]
    assert isinstance(effects[-2], Continue) and effects[-1] == Count("rows", 3)
    assert call(scan, RANGE, tables=tables, options={"rows": 10})[-1] == Count("rows", 5)  # no rest: no None


def test_a_handler_hands_on_one_rest_at_most():
    with pytest.raises(PluginError, match="two Continue effects"):
        Effects.collect([Continue({}), Continue({})])
    assert Effects.collect([None, Continue({"a": 1})]).continued == Continue({"a": 1})
    with pytest.raises(PluginError, match="map payload"):
        Effects.collect(Continue(["not", "a", "map"]))  # type: ignore[arg-type]


# whole runs --------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 3, 50])
def test_a_range_in_slices_sums_exactly(rows, ledger):
    tables = values(40)
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"rows": rows})
    assert run.status == "done", run.error
    assert dict(tables.scan("sums_daily")) == expected(tables)
    assert ledger.counters(run.id) == {"rows": 40}
    seqs = sorted(r.message.id.rsplit("/", 1)[1] for r in ledger.recorded(run.id, "map"))
    assert seqs == sorted(["0"] + [f"0+{i}" for i in range(1, -(-40 // rows))])  # one message per slice


def test_with_splitting_on_the_rest_is_split_and_the_sums_stay_exact(ledger):
    tables = values(400)
    split = SplitSettings(enabled=True, ways=3, tail=4, min_rows=10)
    run = run_job(job, {"date": "2026-11-22"}, tables, ledger, options={"rows": 20}, split=split)
    assert run.status == "done", run.error
    assert dict(tables.scan("sums_daily")) == expected(tables)
    assert ledger.counters(run.id) == {"rows": 400}
    recorded = [r.message.id.rsplit("/", 1)[1] for r in ledger.recorded(run.id, "map")]
    assert any(is_part(seq) for seq in recorded)
    assert len(set(recorded)) == len(recorded)


# splitting -----------------------------------------------------------------------------

hex_keys = st.text("0123456789abcdef", min_size=1, max_size=6).map(lambda t: DAY + t.encode())


@given(hex_keys, hex_keys | st.just(prefix_stop(DAY)) | st.just(b""), st.integers(2, 9))
def test_split_ranges_cover_a_range_exactly(a, b, ways):
    start, stop = (a, b) if not b or a < b else (b, a)
    if stop and start >= stop:
        return
    parts = split_ranges({"start": start, "stop": stop, "x": 1}, ways)
    if not parts:
        return
    assert 2 <= len(parts) <= ways
    assert parts[0]["start"] == start and parts[-1]["stop"] == stop and all(p["x"] == 1 for p in parts)
    for before, after in zip(parts, parts[1:], strict=False):
        assert before["stop"] == after["start"]
    assert all(p["start"] < p["stop"] for p in parts[:-1]) and (not stop or parts[-1]["start"] < stop)


def test_a_days_last_chunk_and_a_rest_inside_one_prefix_can_be_cut():
    assert range_cuts(DAY + b"7f3a9c", prefix_stop(DAY), 4)  # stop: the end of the day's keys
    assert range_cuts(DAY + b"7f3a9c", DAY + b"8", 4)[0].startswith(DAY + b"7")  # weighs the digits after 7
    assert range_cuts(DAY + b"7f", DAY + b"7f", 4) == [] and range_cuts(DAY, DAY + b"1", 1) == []


def test_a_ranges_rows_are_estimated_from_small_reads_across_it():
    assert estimated_rows(values(300), "values", RANGE) == 300  # no piece holds more than a sample: counted
    tables = values(4000)
    assert 3600 < estimated_rows(tables, "values", RANGE) < 4400
    assert 1800 < estimated_rows(tables, "values", {"start": DAY + b"8", "stop": RANGE["stop"]}) < 2200
    assert estimated_rows(tables, "values", {"start": DAY + b"8", "stop": DAY + b"8"}) == 0
    assert estimated_rows(tables, "values", RANGE, least=500) < 1000  # it stops once it has seen enough
    # Rows bunched late in a range are seen: 3000 spread under 7f, the end of [70, 80).
    hot = values(100)
    hot.apply([Put("values", DAY + f"7f{i * 0xFFFF // 3000:04x}".encode(), {"v:key": "k", "v:n": 1})
               for i in range(3000)])
    assert 2700 < estimated_rows(hot, "values", {"start": DAY + b"70", "stop": DAY + b"8"}) < 3500


class Ledger:
    """A worker's ledger as HandOn asks it: how many of the phase's messages are open."""

    def __init__(self, open_messages: int | Exception):
        self.open = open_messages

    def open_count(self, run_id, phase, limit=None):
        if isinstance(self.open, Exception):
            raise self.open
        return self.open


@pytest.mark.parametrize("settings, open_messages, waiting, ways", [
    (SplitSettings(), 1, 0, 1),  # off
    (SplitSettings(enabled=True, tail=4, min_rows=5), 1, 0, 4),  # the tail: split
    (SplitSettings(enabled=True, tail=4, min_rows=5), 5, 0, 1),  # too many open
    (SplitSettings(enabled=True, tail=4, min_rows=5), 1, 2, 1),  # work waiting on the queue
    (SplitSettings(enabled=True, tail=4, min_rows=500), 1, 0, 1),  # too few rows left
    (SplitSettings(enabled=True, tail=4, min_rows=5), OSError("ledger down"), 0, 1),  # no look: no split
])
def test_a_rest_is_split_only_in_the_phase_tail(settings, open_messages, waiting, ways):
    tables, broker, keys = values(100), MemoryBroker(), process_keys()
    broker.declare(["swarm.sums.scan"])
    broker.publish([("swarm.sums.scan", b"waiting")] * waiting)
    env = Envelope("sums", "sums@date=2026-11-22", "map", "scan", "all", "0+3", payload=dict(RANGE))
    rest = Continue({**RANGE, "start": DAY + b"40"})
    made = HandOn(job, Ledger(open_messages), broker, tables, keys, settings).messages(env, job.stages["scan"], rest)
    bodies = [decode(m.body, keys) for m in made]
    assert len(made) == ways
    if ways == 1:
        assert made[0].id == "sums@date=2026-11-22/map/all/scan/0+4" and bodies[0].payload == rest.payload
    else:
        assert [b.seq for b in bodies] == [f"0+4:{i}" for i in range(ways)]
        assert bodies[0].payload["start"] == rest.payload["start"] and bodies[-1].payload["stop"] == RANGE["stop"]
    assert HandOn(job, Ledger(1), broker, tables, keys, settings).messages(env, job.stages["scan"], None) == []


def test_a_stage_that_declares_no_ranges_is_never_split():
    plain = Job("plain")
    plain.stage("scan", phase="map")(scan)
    env = Envelope("plain", "plain", "map", "scan", "all", "0", payload=dict(RANGE))
    made = HandOn(plain, Ledger(1), MemoryBroker(), values(100), process_keys(),
                  SplitSettings(enabled=True, min_rows=1)).messages(env, plain.stages["scan"], Continue(dict(RANGE)))
    assert [m.id for m in made] == ["plain/map/all/scan/0+1"]


def test_settings_are_checked_and_come_from_the_config(tmp_path):
    (tmp_path / "swarm.toml").write_text("[split]\nmin_rows = 500\n")
    with pytest.raises(ConfigError, match="split.ways must be 2 or more"):
        SplitSettings(ways=1)
    assert SplitSettings.of({"enabled": True, "ways": 3, "tail": 2, "min_rows": 0}) == SplitSettings(True, 3, 2, 0)
    cfg = config.load(str(tmp_path / "swarm.toml"), env={"SWARM_SPLIT_ENABLED": "true", "SWARM_SPLIT_WAYS": "3"})
    assert master_settings(cfg, job).split == SplitSettings(enabled=True, ways=3, min_rows=500)  # `swarm master`'s
    with pytest.raises(ConfigError, match="split.tail must be 1 or more, got 0"):
        config.load(str(tmp_path / "swarm.toml"), env={"SWARM_SPLIT_TAIL": "0"})


def _ctx(tables):
    return SimpleNamespace(tables=tables)  # what slice_of reads of a handler's ctx
