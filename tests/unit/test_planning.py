"""Plans from regions: ``swarm.planning.region_chunks`` and the key arithmetic under it (``swarm.keyrange``)."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarm import Chunk
from swarm.effects import Put
from swarm.keyrange import BYTES, HEX, KeySpace, region_ranges, uniform_splits
from swarm.planning import region_chunks
from swarm.table import prefix_stop
from swarm.tables.embedded import EmbeddedTables
from swarm.testing import fake_tables, plan
from workers.jobs import merchant_daily as md

DAY = b"2026-11-01/"


def covers_once(ranges, start: bytes, stop: bytes) -> None:
    """The ranges follow one another from ``start`` to ``stop``, none empty."""
    assert ranges[0][0] == start and ranges[-1][1] == stop
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(low < high or not high for low, high in ranges)


def straddles(ranges, boundaries) -> list:
    return [(r, b) for r in ranges for b in boundaries if r[0] < b and (not r[1] or b < r[1])]


# the key space ----------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=6), min_size=2, max_size=30), st.sampled_from([HEX, BYTES, b"abc"]),
       st.sampled_from([b"", b"d/", b"\xff"]))
def test_positions_never_go_backwards_in_key_order(keys, alphabet, prefix):
    space = KeySpace(prefix, alphabet, width=3)
    ordered = sorted(keys)
    positions = [space.position(k) for k in ordered]
    assert positions == sorted(positions)
    assert all(0 <= p <= space.end for p in positions)


@given(st.integers(min_value=1, max_value=16**8 - 1))
def test_a_key_sits_at_its_own_position_and_sorts_with_it(position):
    space = KeySpace(DAY)
    key = space.key_at(position)
    assert space.position(key) == position
    assert key.startswith(DAY) and not key.endswith(b"0")
    if position > 1:
        assert space.key_at(position - 1) < key


def test_keys_outside_the_prefix_sit_at_the_ends():
    space = KeySpace(DAY)
    assert space.position(b"2026-10-31/ffff") == 0 and space.position(DAY) == 0
    assert space.position(prefix_stop(DAY)) == space.end == 16**8
    assert space.position(b"", stop=True) == space.end
    assert space.position(DAY + b"8") == space.end // 2
    assert space.position(DAY + b"8-x") == space.end // 2  # a non-digit sorts where it falls among the digits
    assert space.position(DAY + b"~") == space.end  # after every digit


def test_cuts_are_even_and_strictly_inside():
    space = KeySpace(DAY)
    assert space.cuts(DAY, prefix_stop(DAY), 4) == [DAY + b"4", DAY + b"8", DAY + b"c"]
    assert space.cuts(DAY + b"2", DAY + b"4", 2) == [DAY + b"3"]
    assert space.cuts(DAY + b"2", DAY + b"2000000001", 4) == []  # too narrow to cut: stays whole


# ranges from regions ----------------------------------------------------------------------


EIGHT = uniform_splits(DAY, 8)  # the boundaries of a day pre-split into 8 regions


def regions_at(boundaries):
    edges = [b"", *boundaries, b""]
    return list(zip(edges, edges[1:]))


@pytest.mark.parametrize(("kwargs", "count"), [({}, 8), ({"per_region": 3}, 24), ({"chunks": 32}, 32),
                                               ({"chunks": 12}, 12), ({"chunks": 3}, 8)])
def test_a_pre_split_day_is_cut_at_every_region_and_evenly_inside(kwargs, count):
    ranges = region_ranges(regions_at(EIGHT), prefix=DAY, **kwargs)
    assert len(ranges) == count
    covers_once(ranges, DAY, prefix_stop(DAY))
    assert straddles(ranges, EIGHT) == []
    assert set(EIGHT) <= {low for low, _ in ranges}


def test_chunks_are_shared_by_width_when_the_range_crosses_regions_partly():
    # Regions of unequal width over the day: 1/16, 11/16, 1/4 of its keys.
    boundaries = [DAY + b"1", DAY + b"c"]
    ranges = region_ranges(regions_at(boundaries), prefix=DAY, chunks=16)
    assert len(ranges) == 16 and straddles(ranges, boundaries) == []
    per_region = [sum(1 for low, _ in ranges if a <= low and (not b or low < b)) for a, b in regions_at(boundaries)]
    assert per_region == [1, 11, 4]


def test_a_day_past_the_split_points_is_cut_evenly_inside_the_last_region():
    other = b"2026-11-02/"
    ranges = region_ranges(regions_at(EIGHT), prefix=other, chunks=8)
    cuts = [other + d for d in (b"2", b"4", b"6", b"8", b"a", b"c", b"e")]  # uniform_splits' keys, shortest
    assert ranges == list(zip([other, *cuts], [*cuts, prefix_stop(other)]))


def test_start_and_stop_and_binary_keys():
    ranges = region_ranges(regions_at([b"\x40"]), chunks=4, alphabet=BYTES)
    assert ranges == [(b"", b"\x40"), (b"\x40", b"\x80"), (b"\x80", b"\xc0"), (b"\xc0", b"")]
    ranges = region_ranges(regions_at([b"k5"]), b"k2", b"k8", per_region=2, alphabet=b"0123456789")
    assert ranges == [(b"k2", b"k35"), (b"k35", b"k5"), (b"k5", b"k65"), (b"k65", b"k8")]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"prefix": DAY, "start": b"a"}, "prefix, or start and stop"),
    ({"prefix": DAY, "chunks": 2, "per_region": 2}, "per_region or chunks"),
    ({"prefix": DAY, "chunks": 0}, ">= 1"),
    ({"start": b"b", "stop": b"a"}, "empty key range"),
])
def test_contradictory_requests_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        region_ranges([(b"", b"")], **kwargs)


# chunks on a table store ------------------------------------------------------------------


@pytest.fixture
def events():
    """A day of 3,000 hashed keys in a table pre-split into 8 regions, and a stray row either side of it."""
    store = EmbeddedTables()
    store.create_table("events", ["e"], EIGHT)
    keys = [DAY + hashlib.sha256(b"%d" % i).hexdigest()[:16].encode() for i in range(3000)]
    store.apply([Put("events", k, {b"e:n": b"1"}) for k in keys + [b"2026-10-31/ff", b"2026-11-02/00"]])
    yield store, sorted(keys)
    store.close()


def test_region_chunks_read_every_row_of_the_day_exactly_once(events):
    store, keys = events
    chunks = region_chunks(store, "events", prefix=DAY, chunks=32)
    assert [c.id for c in chunks] == [f"r{i:05d}" for i in range(32)]
    read = [k for c in chunks for k, _ in store.scan("events", c.payload["start"], c.payload["stop"])]
    assert read == keys
    sizes = [len(list(store.scan("events", c.payload["start"], c.payload["stop"]))) for c in chunks]
    assert min(sizes) > 3000 / 32 / 2 and max(sizes) < 3000 / 32 * 2  # hashed keys: even chunks


def test_region_chunks_carry_the_payload_given_and_take_text(events):
    store, _ = events
    chunks = region_chunks(store, "events", prefix=DAY.decode(), per_region=1, payload={"part": 0}, name="m")
    assert chunks[0] == Chunk("m00000", {"part": 0, "start": DAY, "stop": EIGHT[0]})
    assert len(chunks) == 8


def test_a_planner_uses_it_through_ctx_tables():
    tables = fake_tables({md.EVENTS: {}}, md.job)
    chunks = plan(md.job, "map", tables=tables, params={"date": "2026-11-01"}, options={"chunks": 5})
    assert len(chunks) == 5 and chunks[0].payload == {"start": DAY, "stop": DAY + b"33333333"}
    assert chunks[-1].payload["stop"] == prefix_stop(DAY)


def test_the_example_job_plans_by_the_regions_of_its_events_table():
    tables = EmbeddedTables()
    md.create_tables(tables, "2026-11-01", regions=8)
    for date, chunks, count in (("2026-11-01", 4, 8), ("2026-11-01", 16, 16), ("2026-11-02", 4, 4)):
        planned = plan(md.job, "map", tables=tables, params={"date": date}, options={"chunks": chunks})
        assert len(planned) == count
        assert straddles([(c.payload["start"], c.payload["stop"]) for c in planned], EIGHT) == []
    tables.close()


def test_the_same_chunks_through_the_hbase_adapter_on_the_dev_server(tmp_path):
    from swarm.hbase_dev import DevServer
    from swarm.tables.hbase import HBaseTables

    with DevServer(str(tmp_path / "tables.db")) as server:
        tables = HBaseTables(server.url)
        tables.create_table("events", ["e"], EIGHT)  # the dev server pre-splits; HBase's Thrift API cannot
        embedded = EmbeddedTables()
        embedded.create_table("events", ["e"], EIGHT)
        for kwargs in ({"chunks": 20}, {"per_region": 3}, {"start": DAY + b"3", "stop": DAY + b"9"}):
            assert region_chunks(tables, "events", **kwargs) == region_chunks(embedded, "events", **kwargs)
        tables.close()
        embedded.close()
