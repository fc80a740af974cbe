"""The HBase Thrift1 calls, answered from an ``EmbeddedTables`` store.

Part of the development server, a test and development stand-in for HBase,
never a production store. It follows HBase's own Thrift1 handler call by
call: column addressing (see ``columns``), reads with a timestamp see cells
older than it (``[0, ts)``), a delete removes cells not newer than its
timestamp, ``mutateRow`` applies its deletes before its puts and
``mutateRows`` all its puts before all its deletes, and a missing table or
family is an ``IOError``. Where it differs from HBase: it keeps one version
per cell (column descriptors report ``maxVersions`` 1) and no delete
markers; it has no filters and no reversed scans; a table's enabled or
disabled state lives in memory and is back to enabled after a restart.
"""
from __future__ import annotations

import re
import threading
from typing import Any, Iterable, Sequence

from swarm.errors import TableError
from swarm.hbase_dev.columns import Cells, Selection, parse
from swarm.hbase_dev.errors import (
    AlreadyExistsError,
    HBaseError,
    IllegalArgumentError,
    no_such_family,
    table_not_found,
)
from swarm.hbase_dev.scanners import Chunk, Scanner, ScannerRegistry, ScanSpec
from swarm.table import prefix_stop
from swarm.tables.embedded import Edit, EmbeddedTables
from swarm.tables.thrift import hbase as T

LATEST_TIMESTAMP = (1 << 63) - 1  # HBase's HConstants.LATEST_TIMESTAMP: "now" on writes, "all" on reads
_TABLE_NAME = re.compile(r"^(?:[A-Za-z0-9_]+:)?[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_FAMILY_NAME = re.compile(rb"^[^.:][^:]*$")


class HBaseHandler:
    """Implements the ``Hbase`` service of ``Hbase.thrift`` and ``HbaseDev.createTableWithSplits``."""

    def __init__(self, store: EmbeddedTables, scanners: ScannerRegistry, host: str = "localhost", port: int = 0):
        self._store = store
        self._scanners = scanners
        self._host, self._port = host, port
        self._disabled: set[str] = set()
        self._ddl = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        # Calls of the IDL this server does not implement get a clear IOError.
        if name in T.Hbase.thrift_services:
            def unsupported(*_: Any) -> None:
                raise HBaseError(f"{name} is not supported by the Swarm HBase development server")

            return unsupported
        raise AttributeError(name)

    # tables -----------------------------------------------------------------

    def getTableNames(self) -> list[bytes]:
        return [name.encode() for name in self._store.tables()]

    def createTable(self, tableName: bytes, columnFamilies: Sequence[Any]) -> None:
        self._create(tableName, [cd.name or b"" for cd in columnFamilies or ()], ())

    def createTableWithSplits(self, tableName: bytes, families: Sequence[bytes], splitKeys: Sequence[bytes]) -> None:
        self._create(tableName, families or (), splitKeys or ())

    def _create(self, table: bytes, families: Iterable[bytes], splits: Iterable[bytes]) -> None:
        name = _valid_table_name(table)
        fams = _valid_families(families)
        cuts = _valid_splits(splits)
        with self._ddl:
            if name in self._store.tables():
                raise AlreadyExistsError("table name already in use")
            self._store.create_table(name, fams, cuts)

    def deleteTable(self, tableName: bytes) -> None:
        name = self._existing(tableName)[0]
        with self._ddl:
            if name not in self._disabled:
                raise HBaseError(f"org.apache.hadoop.hbase.TableNotDisabledException: {name}")
            self._store.drop_table(name)
            self._disabled.discard(name)

    def enableTable(self, tableName: bytes) -> None:
        name = self._existing(tableName)[0]
        with self._ddl:
            if name not in self._disabled:
                raise HBaseError(f"org.apache.hadoop.hbase.TableNotDisabledException: {name}")
            self._disabled.discard(name)

    def disableTable(self, tableName: bytes) -> None:
        name = self._existing(tableName)[0]
        with self._ddl:
            if name in self._disabled:
                raise HBaseError(f"org.apache.hadoop.hbase.TableNotEnabledException: {name}")
            self._disabled.add(name)

    def isTableEnabled(self, tableName: bytes) -> bool:
        return self._existing(tableName)[0] not in self._disabled

    def compact(self, tableNameOrRegionName: bytes) -> None:
        """Nothing to compact in the embedded store."""

    majorCompact = compact

    def getColumnDescriptors(self, tableName: bytes) -> dict[bytes, Any]:
        families = self._existing(tableName)[1]
        named = [f.encode() + b":" for f in families]
        return {n: T.ColumnDescriptor(name=n, maxVersions=1) for n in named}

    def getTableRegions(self, tableName: bytes) -> list[Any]:
        try:
            name = self._existing(tableName)[0]
        except HBaseError:
            return []  # HBase answers an empty list for a missing table
        return [self._region(name, i, start, end) for i, (start, end) in enumerate(self._store.regions(name))]

    def _region(self, name: str, index: int, start: bytes, end: bytes) -> Any:
        region_id = index + 1
        return T.TRegionInfo(
            startKey=start,
            endKey=end,
            id=region_id,
            name=b"%s,%s,%d." % (name.encode(), start, region_id),
            version=1,
            serverName=self._host.encode(),
            port=self._port,
        )

    # reads ------------------------------------------------------------------

    def get(self, tableName: bytes, row: bytes, column: bytes, attributes: Any) -> list[Any]:
        return self.getVerTs(tableName, row, column, LATEST_TIMESTAMP, 1, attributes)

    def getVer(self, tableName: bytes, row: bytes, column: bytes, numVersions: int, attributes: Any) -> list[Any]:
        return self.getVerTs(tableName, row, column, LATEST_TIMESTAMP, numVersions, attributes)

    def getVerTs(self, tableName, row, column, timestamp, numVersions, attributes) -> list[Any]:
        found = self._get(tableName, [row], [column or b""], timestamp)
        cells = found[0][1] if found else {}
        return [T.TCell(value=value, timestamp=ts) for _, (value, ts) in sorted(cells.items())]

    def getRow(self, tableName, row, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, [row], None, LATEST_TIMESTAMP, attributes)

    def getRowWithColumns(self, tableName, row, columns, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, [row], columns, LATEST_TIMESTAMP, attributes)

    def getRowTs(self, tableName, row, timestamp, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, [row], None, timestamp, attributes)

    def getRowWithColumnsTs(self, tableName, row, columns, timestamp, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, [row], columns, timestamp, attributes)

    def getRows(self, tableName, rows, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, rows, None, LATEST_TIMESTAMP, attributes)

    def getRowsWithColumns(self, tableName, rows, columns, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, rows, columns, LATEST_TIMESTAMP, attributes)

    def getRowsTs(self, tableName, rows, timestamp, attributes) -> list[Any]:
        return self.getRowsWithColumnsTs(tableName, rows, None, timestamp, attributes)

    def getRowsWithColumnsTs(self, tableName, rows, columns, timestamp, attributes) -> list[Any]:
        return [_row_result(key, _flat(cells), False) for key, cells in self._get(tableName, rows, columns, timestamp)]

    def _get(self, table: bytes, rows: Sequence[bytes] | None, columns,
             timestamp: int | None) -> list[tuple[bytes, Cells]]:
        name, families = self._enabled(table)
        selection = Selection(columns, _explicit(timestamp))
        selection.check(name, families)
        out = []
        for key in rows or ():
            cells = selection.pick(self._store.row_cells(name, bytes(key), selection.prefilter()))
            if cells:  # HBase leaves empty results out
                out.append((bytes(key), cells))
        return out

    # writes -----------------------------------------------------------------

    def mutateRow(self, tableName, row, mutations, attributes) -> None:
        self.mutateRowTs(tableName, row, mutations, LATEST_TIMESTAMP, attributes)

    def mutateRowTs(self, tableName, row, mutations, timestamp, attributes) -> None:
        name, families = self._enabled(tableName)
        deletes, puts = _edits(name, families, row, mutations, strict=False)
        self._store.edit(name, deletes + puts, _explicit(timestamp))

    def mutateRows(self, tableName, rowBatches, attributes) -> None:
        self.mutateRowsTs(tableName, rowBatches, LATEST_TIMESTAMP, attributes)

    def mutateRowsTs(self, tableName, rowBatches, timestamp, attributes) -> None:
        name, families = self._enabled(tableName)
        all_deletes: list[Edit] = []
        all_puts: list[Edit] = []
        for batch in rowBatches or ():
            deletes, puts = _edits(name, families, batch.row, batch.mutations, strict=True)
            all_deletes += deletes
            all_puts += puts
        self._store.edit(name, all_puts + all_deletes, _explicit(timestamp))

    def deleteAll(self, tableName, row, column, attributes) -> None:
        self.deleteAllTs(tableName, row, column, LATEST_TIMESTAMP, attributes)

    def deleteAllTs(self, tableName, row, column, timestamp, attributes) -> None:
        mutation = T.Mutation(isDelete=True, column=column)
        self.mutateRowTs(tableName, row, [mutation], timestamp, attributes)

    def deleteAllRow(self, tableName, row, attributes) -> None:
        self.deleteAllRowTs(tableName, row, LATEST_TIMESTAMP, attributes)

    def deleteAllRowTs(self, tableName, row, timestamp, attributes) -> None:
        name = self._enabled(tableName)[0]
        self._store.edit(name, [Edit("delete_row", _row_key(row))], _explicit(timestamp))

    def atomicIncrement(self, tableName: bytes, row: bytes, column: bytes, value: int) -> int:
        name, families = self._enabled(tableName)
        family, qualifier = parse(column or b"")
        _check_family(name, families, family)
        try:
            return self._store.increment(name, _row_key(row), family + b":" + (qualifier or b""), value)
        except ValueError as exc:
            raise HBaseError(f"org.apache.hadoop.hbase.DoNotRetryIOException: {exc}") from None

    # scanners ---------------------------------------------------------------

    def scannerOpenWithScan(self, tableName: bytes, scan: Any, attributes: Any) -> int:
        if scan.filterString:
            raise HBaseError("filterString is not supported by the Swarm HBase development server")
        if scan.reversed:
            raise HBaseError("reversed scans are not supported by the Swarm HBase development server")
        return self._open(
            tableName, scan.startRow, scan.stopRow, scan.columns, scan.timestamp, scan.batchSize, bool(scan.sortColumns)
        )

    def scannerOpen(self, tableName, startRow, columns, attributes) -> int:
        return self._open(tableName, startRow, None, columns)

    def scannerOpenWithStop(self, tableName, startRow, stopRow, columns, attributes) -> int:
        return self._open(tableName, startRow, stopRow, columns)

    def scannerOpenWithPrefix(self, tableName, startAndPrefix, columns, attributes) -> int:
        prefix = bytes(startAndPrefix or b"")
        return self._open(tableName, prefix, prefix_stop(prefix), columns)

    def scannerOpenTs(self, tableName, startRow, columns, timestamp, attributes) -> int:
        return self._open(tableName, startRow, None, columns, timestamp)

    def scannerOpenWithStopTs(self, tableName, startRow, stopRow, columns, timestamp, attributes) -> int:
        return self._open(tableName, startRow, stopRow, columns, timestamp)

    def _open(self, table, start, stop, columns, timestamp=None, batch=None, sort_columns=False) -> int:
        name, families = self._enabled(table)
        selection = Selection(columns, _explicit(timestamp))
        selection.check(name, families)
        spec = ScanSpec(name, bytes(start or b""), bytes(stop or b""), selection, batch, sort_columns)
        return self._scanners.add(Scanner(self._store, spec))

    def scannerGet(self, id: int) -> list[Any]:
        return self.scannerGetList(id, 1)

    def scannerGetList(self, id: int, nbRows: int) -> list[Any]:
        with self._scanners.use(id) as scanner:
            chunks = scanner.next(max(int(nbRows), 1))
            return [_chunk_result(chunk, scanner.spec.sort_columns) for chunk in chunks]

    def scannerClose(self, id: int) -> None:
        self._scanners.close(id)

    # helpers ----------------------------------------------------------------

    def _existing(self, table: bytes) -> tuple[str, list[str]]:
        name = _decode_name(table)
        try:
            return name, self._store.families(name)
        except TableError:
            raise table_not_found(name) from None

    def _enabled(self, table: bytes) -> tuple[str, list[str]]:
        name, families = self._existing(table)
        if name in self._disabled:
            raise HBaseError(f"org.apache.hadoop.hbase.TableNotEnabledException: {name} is disabled")
        return name, families


def _decode_name(table: bytes | None) -> str:
    try:
        return bytes(table or b"").decode("ascii")
    except UnicodeDecodeError:
        raise IllegalArgumentError(f"illegal table name {table!r}") from None


def _valid_table_name(table: bytes) -> str:
    name = _decode_name(table)
    if not _TABLE_NAME.match(name):
        raise IllegalArgumentError(f"java.lang.IllegalArgumentException: illegal table name {name!r}")
    return name


def _valid_families(families: Iterable[bytes]) -> list[str]:
    names = {parse(f)[0] for f in families}
    if not names:
        raise IllegalArgumentError("java.lang.IllegalArgumentException: a table needs at least one column family")
    for family in names:
        if not _FAMILY_NAME.match(family) or not family.isascii():
            raise IllegalArgumentError(f"java.lang.IllegalArgumentException: illegal column family name {family!r}")
    return sorted(f.decode() for f in names)


def _valid_splits(splits: Iterable[bytes]) -> list[bytes]:
    cuts = [bytes(s) for s in splits]
    if any(not s for s in cuts):
        raise IllegalArgumentError("java.lang.IllegalArgumentException: empty split key must not be passed")
    if len(set(cuts)) != len(cuts):
        raise IllegalArgumentError("java.lang.IllegalArgumentException: all split keys must be unique")
    return sorted(cuts)


def _row_key(row: bytes | None) -> bytes:
    if not row:
        raise IllegalArgumentError("java.lang.IllegalArgumentException: Row length is 0")
    return bytes(row)


def _check_family(name: str, families: Sequence[str], family: bytes) -> None:
    if family.decode(errors="replace") not in families:
        raise no_such_family(name, family)


def _edits(name: str, families: Sequence[str], row: bytes, mutations, strict: bool) -> tuple[list[Edit], list[Edit]]:
    """A row's mutations as ``(deletes, puts)``, HBase's way."""
    key = _row_key(row)
    deletes: list[Edit] = []
    puts: list[Edit] = []
    for m in mutations or ():
        column = bytes(m.column or b"")
        family, qualifier = parse(column)
        _check_family(name, families, family)
        if m.isDelete:
            deletes.append(Edit("delete_family", key, family) if qualifier is None else Edit("delete", key, column))
        elif qualifier is not None:
            puts.append(Edit("put", key, column, bytes(m.value or b"")))
        elif strict:  # mutateRows refuses a put without a qualifier; mutateRow ignores it
            raise IllegalArgumentError("java.lang.IllegalArgumentException: Invalid famAndQf provided.")
    return deletes, puts


def _explicit(timestamp: int | None) -> int | None:
    """``timestamp``, or None for HBase's LATEST_TIMESTAMP (reads: no bound; writes: now)."""
    return None if timestamp is None or timestamp == LATEST_TIMESTAMP else int(timestamp)


def _flat(cells: Cells) -> list[tuple[bytes, bytes, int]]:
    return [(col, value, ts) for col, (value, ts) in sorted(cells.items())]


def _chunk_result(chunk: Chunk, sort_columns: bool) -> Any:
    return _row_result(chunk[0], chunk[1], sort_columns)


def _row_result(key: bytes, cells: list[tuple[bytes, bytes, int]], sort_columns: bool) -> Any:
    if sort_columns:
        sorted_columns = [T.TColumn(columnName=c, cell=T.TCell(value=v, timestamp=ts)) for c, v, ts in cells]
        return T.TRowResult(row=key, sortedColumns=sorted_columns)
    return T.TRowResult(row=key, columns={c: T.TCell(value=v, timestamp=ts) for c, v, ts in cells})
