"""The behaviour every table store shares, run against each implementation.

A test module subclasses ``TableStoreContract`` and provides a ``tables``
fixture: an empty ``TableStore`` (no tables yet).
"""
from __future__ import annotations

from typing import Callable, Mapping

import pytest

from swarm.effects import Delete, Put
from swarm.errors import PluginError, TableError
from swarm.table import TableStore

# Row keys whose byte order differs from any text order: 0x00 and 0xff, prefixes, lengths.
AWKWARD_KEYS = [
    b"\x00", b"\x00\x00", b"\x00\xff", b"\x01", b"A", b"a", b"a\x00", b"a\x00\x00", b"a\x01",
    b"aa", b"a\xff", b"a\xff\xff", b"b", b"\x7f", b"\x80", b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff",
]


def keys(rows) -> list[bytes]:
    return [key for key, _ in rows]


def fill(tables: TableStore, table: str, count: int, family: str = "f") -> list[bytes]:
    """``count`` rows ``k0000``... with one cell ``f:v`` each; their keys."""
    names = [b"k%04d" % i for i in range(count)]
    tables.apply([Put(table, k, {f"{family}:v".encode(): k[1:]}) for k in names])
    return names


def scan_interrupted(
    tables: TableStore, table: str, batch_size: int, at: Mapping[int, Callable[[], object]]
) -> list[bytes]:
    """Scan rows ``fill`` wrote, checking each one's cell; ``at[n]()`` runs after the n-th row. The keys read."""
    seen: list[bytes] = []
    for key, cells in tables.scan(table, batch_size=batch_size):
        seen.append(key)
        assert cells == {b"f:v": key[1:]}
        if len(seen) in at:
            at[len(seen)]()
    return seen


class TableStoreContract:
    @pytest.fixture
    def t(self, tables: TableStore) -> str:
        tables.create_table("t", ["f", "g"])
        return "t"

    # tables -------------------------------------------------------------------------

    def test_create_list_and_drop_tables_idempotently(self, tables):
        assert tables.tables() == []
        tables.create_table("one", ["f"])
        tables.create_table("two", ["f:", "g"])
        tables.create_table("one", ["f"])  # exists: a no-op
        assert tables.tables() == ["one", "two"]
        tables.drop_table("one")
        tables.drop_table("one")  # gone: a no-op
        tables.drop_table("never")
        assert tables.tables() == ["two"]

    def test_dropping_a_table_drops_its_rows(self, tables, t):
        fill(tables, t, 3)
        tables.drop_table(t)
        tables.create_table(t, ["f"])
        assert list(tables.scan(t)) == []

    def test_a_table_without_splits_is_one_open_region(self, tables, t):
        assert tables.regions(t) == [(b"", b"")]

    def test_regions_follow_the_splits_in_key_order(self, tables):
        tables.create_table("split", ["f"], splits=[b"m", b"\x00\xff", b"c", b"m", b""])
        assert tables.regions("split") == [
            (b"", b"\x00\xff"), (b"\x00\xff", b"c"), (b"c", b"m"), (b"m", b""),
        ]

    def test_creating_an_existing_table_keeps_its_regions_and_rows(self, tables):
        tables.create_table("split", ["f"], splits=[b"m"])
        fill(tables, "split", 2)
        tables.create_table("split", ["f"], splits=[b"a", b"z"])
        assert tables.regions("split") == [(b"", b"m"), (b"m", b"")]
        assert len(list(tables.scan("split"))) == 2

    def test_a_missing_table_has_no_regions_and_cannot_be_scanned_or_written(self, tables):
        with pytest.raises(TableError, match="missing"):
            tables.regions("missing")
        with pytest.raises(TableError, match="missing"):
            list(tables.scan("missing"))
        with pytest.raises(TableError, match="missing"):
            tables.apply([Put("missing", b"r", {b"f:a": b"1"})])

    def test_a_column_family_the_table_does_not_have_is_refused(self, tables, t):
        with pytest.raises(TableError, match="family"):
            tables.apply([Put(t, b"r", {b"nofamily:a": b"1"})])
        assert tables.row(t, b"r") == {}

    # keys and cells ---------------------------------------------------------------------

    def test_rows_come_back_in_byte_order_of_their_keys(self, tables, t):
        shuffled = AWKWARD_KEYS[1::2] + AWKWARD_KEYS[::2]
        tables.apply([Put(t, k, {b"f:k": k}) for k in shuffled])
        rows = list(tables.scan(t))
        assert keys(rows) == sorted(AWKWARD_KEYS)
        assert all(cells == {b"f:k": key} for key, cells in rows)

    def test_families_and_binary_qualifiers_and_values(self, tables, t):
        cells = {b"f:a": b"1", b"f:\x00\xff": b"\x00\xff\x00", b"f:": b"empty qualifier", b"g:a": b""}
        tables.apply([Put(t, b"r", cells)])
        assert tables.row(t, b"r") == cells
        assert tables.row(t, b"r", columns=[b"g:"]) == {b"g:a": b""}
        assert tables.row(t, b"r", columns=[b"g"]) == {b"g:a": b""}
        assert tables.row(t, b"r", columns=[b"f:a", b"g:a"]) == {b"f:a": b"1", b"g:a": b""}
        assert tables.row(t, b"r", columns=[b"f:zz"]) == {}

    def test_a_missing_row_is_empty(self, tables, t):
        assert tables.row(t, b"nobody") == {}

    def test_a_put_overwrites_only_the_cells_it_names(self, tables, t):
        tables.apply([Put(t, b"r", {b"f:a": b"1", b"f:b": b"2"})])
        tables.apply([Put(t, b"r", {b"f:a": b"one"})])
        assert tables.row(t, b"r") == {b"f:a": b"one", b"f:b": b"2"}

    def test_text_and_numbers_are_normalised_on_the_way_in(self, tables, t):
        tables.apply([Put(t, "r", {"f:s": "text", "f:i": 42, "f:x": 1.5})])  # not normalised by the caller
        assert tables.row(t, b"r") == {b"f:s": b"text", b"f:i": b"42", b"f:x": b"1.5"}
        assert list(tables.scan(t)) == [(b"r", {b"f:i": b"42", b"f:s": b"text", b"f:x": b"1.5"})]
        with pytest.raises(PluginError, match="family:qualifier"):
            tables.apply([Put(t, "r", {"views": 1})])
        with pytest.raises(PluginError, match="Put or a Delete"):
            tables.apply([{"row": "r"}])

    # scans --------------------------------------------------------------------------

    def test_scan_start_is_inclusive_and_stop_exclusive(self, tables, t):
        names = fill(tables, t, 10)
        assert keys(tables.scan(t, start=b"k0003", stop=b"k0007")) == names[3:7]
        assert keys(tables.scan(t, start=b"k0003")) == names[3:]
        assert keys(tables.scan(t, stop=b"k0002")) == names[:2]
        assert keys(tables.scan(t, start=b"k0003x", stop=b"k0005")) == names[4:5]
        assert list(tables.scan(t, start=b"k0005", stop=b"k0005")) == []

    def test_scan_by_prefix(self, tables, t):
        tables.apply([Put(t, k, {b"f:v": b"x"}) for k in AWKWARD_KEYS])
        assert keys(tables.scan(t, prefix=b"a\x00")) == [b"a\x00", b"a\x00\x00"]
        assert keys(tables.scan(t, prefix=b"a")) == [k for k in sorted(AWKWARD_KEYS) if k.startswith(b"a")]
        assert keys(tables.scan(t, prefix=b"\xff")) == [b"\xff", b"\xff\x00", b"\xff\xff"]
        assert keys(tables.scan(t, prefix=b"\xff\xff")) == [b"\xff\xff"]
        assert keys(tables.scan(t, prefix=b"zz")) == []

    def test_scan_columns_keep_only_rows_that_have_them(self, tables, t):
        tables.apply([
            Put(t, b"1", {b"f:a": b"1a", b"g:b": b"1b"}),
            Put(t, b"2", {b"f:a": b"2a"}),
            Put(t, b"3", {b"g:b": b"3b", b"g:c": b"3c"}),
        ])
        assert list(tables.scan(t, columns=[b"g:"])) == [
            (b"1", {b"g:b": b"1b"}), (b"3", {b"g:b": b"3b", b"g:c": b"3c"})]
        assert list(tables.scan(t, columns=[b"g:c", b"f:a"])) == [
            (b"1", {b"f:a": b"1a"}), (b"2", {b"f:a": b"2a"}), (b"3", {b"g:c": b"3c"}),
        ]

    @pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
    def test_scans_in_batches_smaller_than_the_result_miss_nothing(self, tables, t, batch_size):
        names = fill(tables, t, 23)
        assert list(tables.scan(t, batch_size=batch_size)) == [(k, {b"f:v": k[1:]}) for k in names]
        assert keys(tables.scan(t, start=b"k0004", stop=b"k0019", batch_size=batch_size)) == names[4:19]
        assert keys(tables.scan(t, prefix=b"k001", batch_size=batch_size)) == names[10:20]

    def test_batched_scan_with_a_column_filter_skipping_rows(self, tables, t):
        tables.apply([Put(t, b"r%02d" % i, {b"g:x" if i % 3 == 0 else b"f:x": b"v"}) for i in range(30)])
        assert keys(tables.scan(t, columns=[b"g"], batch_size=2)) == [b"r%02d" % i for i in range(0, 30, 3)]

    # deletes ------------------------------------------------------------------------

    def test_delete_a_cell_a_family_or_a_row(self, tables, t):
        full = {b"f:a": b"1", b"f:b": b"2", b"g:a": b"3", b"g:b": b"4"}
        tables.apply([Put(t, r, full) for r in (b"r1", b"r2", b"r3")])
        tables.apply([Delete(t, b"r1", (b"f:a", b"g:b")), Delete(t, b"r2", (b"g:",)), Delete(t, b"r3")])
        assert tables.row(t, b"r1") == {b"f:b": b"2", b"g:a": b"3"}
        assert tables.row(t, b"r2") == {b"f:a": b"1", b"f:b": b"2"}
        assert tables.row(t, b"r3") == {}
        assert keys(tables.scan(t)) == [b"r1", b"r2"]

    def test_deleting_what_is_not_there_is_a_no_op(self, tables, t):
        tables.apply([Delete(t, b"nobody"), Delete(t, b"nobody", (b"f:a",))])
        assert list(tables.scan(t)) == []

    def test_a_row_whose_cells_are_all_deleted_is_gone(self, tables, t):
        tables.apply([Put(t, b"r", {b"f:a": b"1"})])
        tables.apply([Delete(t, b"r", (b"f:a",))])
        assert tables.row(t, b"r") == {}
        assert list(tables.scan(t)) == []

    # apply --------------------------------------------------------------------------

    def test_apply_many_mutations_across_tables(self, tables, t):
        tables.create_table("u", ["f"])
        mutations = []
        for i in range(1500):
            mutations.append(Put(t, b"row%05d" % i, {b"f:n": b"%d" % i, b"g:sq": b"%d" % (i * i)}))
            mutations.append(Put("u", b"%05d" % (1499 - i), {b"f:n": b"%d" % i}))
        mutations += [Delete(t, b"row%05d" % i) for i in range(0, 1500, 10)]
        tables.apply(mutations)
        rows = list(tables.scan(t, batch_size=400))
        assert len(rows) == 1350
        assert rows[0] == (b"row00001", {b"f:n": b"1", b"g:sq": b"1"})
        assert len(list(tables.scan("u", batch_size=1000))) == 1500
        assert tables.row("u", b"00000") == {b"f:n": b"1499"}

    def test_apply_keeps_the_order_of_mutations_to_one_row(self, tables, t):
        tables.apply([
            Put(t, b"put-then-delete", {b"f:a": b"1"}),
            Delete(t, b"put-then-delete"),
            Delete(t, b"delete-then-put"),
            Put(t, b"delete-then-put", {b"f:a": b"2"}),
            Put(t, b"twice", {b"f:a": b"first"}),
            Put(t, b"twice", {b"f:a": b"second"}),
        ])
        assert tables.row(t, b"put-then-delete") == {}
        assert tables.row(t, b"delete-then-put") == {b"f:a": b"2"}
        assert tables.row(t, b"twice") == {b"f:a": b"second"}

    def test_applying_the_same_mutations_again_changes_nothing(self, tables, t):
        mutations = [Put(t, b"r%d" % i, {b"f:a": b"%d" % i}) for i in range(5)] + [Delete(t, b"r2", (b"f:a",))]
        tables.apply(mutations)
        first = list(tables.scan(t))
        tables.apply(mutations)
        assert list(tables.scan(t)) == first
        assert keys(first) == [b"r0", b"r1", b"r3", b"r4"]

    def test_apply_of_nothing(self, tables):
        tables.apply([])
