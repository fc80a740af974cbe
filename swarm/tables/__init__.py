"""Table-store implementations: ``embedded`` (default) and ``hbase`` (happybase)."""
