from swarm.keyrange import plan_ranges, uniform_splits
from swarm.table import prefix_stop


def test_uniform_splits_are_ordered_and_even():
    cuts = uniform_splits(b"d/", 4)
    assert cuts == [b"d/4000", b"d/8000", b"d/c000"]


def test_ranges_cover_the_span_exactly_once():
    regions = [(b"", b"d/3"), (b"d/3", b"d/a"), (b"d/a", b"")]
    ranges = plan_ranges(regions, b"d/", prefix_stop(b"d/"), uniform_splits(b"d/", 4))
    assert ranges[0][0] == b"d/" and ranges[-1][1] == b"d0"
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert [r for r in ranges if r[0] < b"d/3" < r[1]] == []  # never straddles a region edge
    assert len(ranges) == 6


def test_prefix_stop():
    assert prefix_stop(b"ab") == b"ac"
    assert prefix_stop(b"a\xff") == b"b"
    assert prefix_stop(b"\xff\xff") == b""
