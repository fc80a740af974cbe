"""The HBase development server's scanners and their leases, on a clock the tests move."""
from __future__ import annotations

import pytest

from swarm.effects import Put
from swarm.hbase_dev.columns import Selection
from swarm.hbase_dev.errors import HBaseError, IllegalArgumentError
from swarm.hbase_dev.scanners import Scanner, ScannerRegistry, ScanSpec
from swarm.tables.embedded import EmbeddedTables


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def store():
    store = EmbeddedTables()
    store.create_table("t", ["f", "g"])
    store.apply([Put("t", b"r%d" % i, {b"f:a": b"%d" % i, b"f:b": b"x", b"g:c": b"y"}) for i in range(5)])
    yield store
    store.close()


def scanner(store, columns=None, batch=None, start=b"", stop=b""):
    return Scanner(store, ScanSpec("t", start, stop, Selection(columns), batch))


def untimed(chunks):
    return [(key, [(col, value) for col, value, _ in cells]) for key, cells in chunks]


def test_a_scanner_resumes_after_the_last_row_it_returned(store):
    s = scanner(store)
    first, second, rest = s.next(2), s.next(2), s.next(10)
    assert [k for k, _ in first + second + rest] == [b"r0", b"r1", b"r2", b"r3", b"r4"]
    assert s.next(10) == []


def test_a_scanner_picks_columns_hbase_style(store):
    s = scanner(store, columns=[b"g", b"f:a"], stop=b"r2")
    assert untimed(s.next(10)) == [(b"r0", [(b"f:a", b"0"), (b"g:c", b"y")]), (b"r1", [(b"f:a", b"1"), (b"g:c", b"y")])]


def test_scan_batching_splits_rows_into_partial_results(store):
    s = scanner(store, batch=2, stop=b"r1")
    assert untimed(s.next(10)) == [(b"r0", [(b"f:a", b"0"), (b"f:b", b"x")]), (b"r0", [(b"g:c", b"y")])]


def test_an_idle_scanner_loses_its_lease():
    clock = Clock()
    registry = ScannerRegistry(lease=60.0, clock=clock)
    sid = registry.add(object())  # type: ignore[arg-type]
    clock.t += 59
    with registry.use(sid):
        clock.t += 120  # a long call does not lose the lease: it is renewed when the call ends
    clock.t += 59
    with registry.use(sid):
        pass
    clock.t += 61
    with pytest.raises(HBaseError, match="ScannerTimeoutException: 61000ms passed"):
        with registry.use(sid):
            pass
    registry.close(sid)  # closing an expired scanner is fine, as the client's clean-up expects
    with pytest.raises(IllegalArgumentError, match="scanner ID is invalid"):
        registry.close(sid)


def test_unknown_ids_and_forced_expiry():
    registry = ScannerRegistry(lease=60.0, clock=Clock())
    with pytest.raises(IllegalArgumentError, match="scanner ID is invalid"):
        with registry.use(12345):
            pass
    a, b = registry.add(object()), registry.add(object())  # type: ignore[arg-type]
    assert a != b and len(registry) == 2
    assert registry.expire_all() == 2
    assert len(registry) == 0
    with pytest.raises(HBaseError, match="ScannerTimeoutException"):
        with registry.use(a):
            pass


def test_scanner_ids_differ_between_server_lives():
    assert ScannerRegistry().add(object()) != ScannerRegistry().add(object())  # type: ignore[arg-type]
