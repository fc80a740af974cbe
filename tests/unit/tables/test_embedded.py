"""The embedded table store: the shared contract, and the cell-level calls the HBase dev server uses."""
from __future__ import annotations

import struct

import pytest

from swarm.effects import Put
from swarm.tables.embedded import Edit, EmbeddedTables
from tests.support.contracts.table import TableStoreContract


class TestEmbeddedContract(TableStoreContract):
    @pytest.fixture
    def tables(self, tmp_path):
        store = EmbeddedTables(str(tmp_path / "tables.db"))
        yield store
        store.close()


class TestInMemoryContract(TableStoreContract):
    @pytest.fixture
    def tables(self):
        store = EmbeddedTables()
        yield store
        store.close()


@pytest.fixture
def store():
    store = EmbeddedTables()
    store.create_table("t", ["f", "g"])
    yield store
    store.close()


def test_the_data_survives_reopening_the_file(tmp_path):
    path = str(tmp_path / "tables.db")
    first = EmbeddedTables(path)
    first.create_table("t", ["f"], splits=[b"m"])
    first.apply([Put("t", b"r", {b"f:a": b"1"})])
    first.close()
    second = EmbeddedTables(path)
    assert (second.tables(), second.regions("t"), second.row("t", b"r")) == (
        ["t"], [(b"", b"m"), (b"m", b"")], {b"f:a": b"1"})
    second.close()


def test_scan_cells_carries_timestamps(store):
    store.edit("t", [Edit("put", b"a", b"f:x", b"1")], timestamp=1234)
    store.edit("t", [Edit("put", b"b", b"g:y", b"2")], timestamp=1234)
    assert list(store.scan_cells("t")) == [(b"a", {b"f:x": (b"1", 1234)}), (b"b", {b"g:y": (b"2", 1234)})]
    assert list(store.scan_cells("t", start=b"b", columns=[b"g:"])) == [(b"b", {b"g:y": (b"2", 1234)})]


def test_edit_puts_never_replace_a_newer_cell(store):
    store.edit("t", [Edit("put", b"r", b"f:a", b"new")], timestamp=200)
    store.edit("t", [Edit("put", b"r", b"f:a", b"old")], timestamp=100)
    assert store.row_cells("t", b"r") == {b"f:a": (b"new", 200)}
    store.edit("t", [Edit("put", b"r", b"f:a", b"same time, later write")], timestamp=200)
    assert store.row_cells("t", b"r") == {b"f:a": (b"same time, later write", 200)}


def test_edit_deletes_spare_newer_cells(store):
    store.edit("t", [Edit("put", b"r", b"f:old", b"1")], timestamp=100)
    store.edit("t", [Edit("put", b"r", b"f:new", b"2")], timestamp=300)
    store.edit("t", [Edit("delete_row", b"r")], timestamp=200)
    assert store.row_cells("t", b"r") == {b"f:new": (b"2", 300)}


def test_edit_addresses_cells_families_and_the_empty_qualifier_as_hbase_does(store):
    cells = [Edit("put", b"r", c, b"v") for c in (b"f:", b"f:a", b"f:b", b"g:a", b"g:b")]
    store.edit("t", cells)
    store.edit("t", [Edit("delete", b"r", b"f:"), Edit("delete", b"r", b"f:a"), Edit("delete_family", b"r", b"g")])
    assert store.row("t", b"r") == {b"f:b": b"v"}


def test_edits_apply_in_order_in_one_transaction(store):
    store.edit("t", [Edit("put", b"r", b"f:a", b"1"), Edit("delete_row", b"r"), Edit("put", b"r", b"f:b", b"2")])
    assert store.row("t", b"r") == {b"f:b": b"2"}
    with pytest.raises(ValueError):
        store.edit("t", [Edit("put", b"s", b"f:a", b"1"), Edit("explode", b"s")])  # type: ignore[arg-type]
    assert store.row("t", b"s") == {}


def test_increment_is_a_64_bit_big_endian_counter(store):
    assert store.increment("t", b"r", b"f:n", 5) == 5
    assert store.increment("t", b"r", b"f:n", -7) == -2
    assert store.row("t", b"r") == {b"f:n": struct.pack(">q", -2)}
    store.apply([Put("t", b"r", {b"f:text": b"abc"})])
    with pytest.raises(ValueError, match="not a 64-bit counter"):
        store.increment("t", b"r", b"f:text", 1)
