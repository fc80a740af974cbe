"""HBase's Thrift (v1) interface: ``Hbase.thrift`` (as happybase ships it) and the one-call extension
``HbaseDev.thrift`` that ``HBaseTables`` tries for pre-split tables (the development server answers it;
HBase answers UNKNOWN_METHOD, and the table is created with one region).

Both are loaded under module names of their own so they never collide with
the ``Hbase_thrift`` module happybase registers.
"""
from __future__ import annotations

import pathlib

import thriftpy2

_HERE = pathlib.Path(__file__).resolve().parent

hbase = thriftpy2.load(str(_HERE / "Hbase.thrift"), module_name="swarm_dev_hbase_thrift")
dev = thriftpy2.load(str(_HERE / "HbaseDev.thrift"), module_name="swarm_dev_hbasedev_thrift")

# The one method the dev extension adds; a real HBase Thrift server answers UNKNOWN_METHOD.
CREATE_WITH_SPLITS = "createTableWithSplits"
