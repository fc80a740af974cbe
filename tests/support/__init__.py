"""What the tests share: waiting, the local services, a site of processes, the contract suites, TLS servers.

The bench uses some of it too; it runs from the repository root, where ``tests`` is importable.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
