"""An HBase-Thrift(1)-compatible server for tests and local development.

A development and test stand-in for HBase's Thrift server, never a
production store. It speaks HBase's own ``Hbase.thrift`` IDL (the file
happybase ships, copied here unchanged) over TCP, so happybase and
``swarm.tables.hbase.HBaseTables`` talk to it exactly as they talk to HBase,
and keeps its tables in ``EmbeddedTables`` (a SQLite file, or memory).

Run it with ``swarm hbase-dev --port 9090 --data PATH`` (or
``python -m swarm.hbase_dev``), or in-process::

    with DevServer(path) as server:          # port 0: any free port
        tables = HBaseTables(server.url)

Pre-split tables. HBase's Thrift1 API cannot create a table with split keys.
The server adds one call for that, ``createTableWithSplits`` in
``HbaseDev.thrift``, served on the same connection; ``HBaseTables``'s
``create_table(name, families, splits)`` uses it, so a data generator
pre-splits a table the same way on the embedded store and here. A real HBase
Thrift server answers that call with UNKNOWN_METHOD; against HBase, tables
are pre-split by the operator in the HBase shell. A data file written
through ``EmbeddedTables.create_table(splits=...)`` keeps its splits when
served. ``getTableRegions`` reports the regions the splits define.

Scanners have leases: one left idle longer than ``--scanner-timeout``
(default 60 s, as HBase's ``hbase.client.scanner.timeout.period``) is gone
and its next call fails with HBase's ``ScannerTimeoutException``.

What differs from HBase is listed in ``swarm.hbase_dev.handler``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["DevServer", "main", "serve"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: parsing the Thrift IDL costs every `swarm` command start-up otherwise.
    if name in __all__:
        from swarm.hbase_dev import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
