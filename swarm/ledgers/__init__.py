"""Ledger implementations: ``sqlite`` (embedded default) and ``mysql``."""
