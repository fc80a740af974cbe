"""Errors the development server reports to its clients, independent of any IDL module."""
from __future__ import annotations


class HBaseError(Exception):
    """Reported as the Thrift exception named ``kind`` when the call declares it, else as ``IOError``.

    Messages start with the Java exception name HBase would report, so
    clients that match on them behave as they would against HBase.
    """

    kind = "IOError"


class IllegalArgumentError(HBaseError):
    kind = "IllegalArgument"


class AlreadyExistsError(HBaseError):
    kind = "AlreadyExists"


def table_not_found(name: str) -> HBaseError:
    return HBaseError(f"org.apache.hadoop.hbase.TableNotFoundException: {name}")


def no_such_family(name: str, family: bytes) -> HBaseError:
    return HBaseError(
        "org.apache.hadoop.hbase.regionserver.NoSuchColumnFamilyException: "
        f"column family {family.decode(errors='replace')} does not exist in table {name}"
    )
