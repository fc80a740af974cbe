"""HBase's column addressing on the Thrift API.

``b"f"`` names the whole family ``f``; ``b"f:q"`` names one cell, and
``b"f:"`` the cell with the empty qualifier (HBase 0.96 and later).
"""
from __future__ import annotations

from typing import Iterable, Sequence

from swarm.hbase_dev.errors import no_such_family

Cells = dict[bytes, tuple[bytes, int]]


def parse(column: bytes) -> tuple[bytes, bytes | None]:
    """``(family, qualifier)``; the qualifier is None when the column names a whole family."""
    family, sep, qualifier = bytes(column).partition(b":")
    return family, (qualifier if sep else None)


class Selection:
    """The cells a get or scan asks for, and the time range ``[0, before)`` it reads."""

    def __init__(self, columns: Iterable[bytes] | None, before: int | None = None):
        self.families: set[bytes] = set()
        self.cells: set[bytes] = set()
        for column in columns or ():
            family, qualifier = parse(column)
            if qualifier is None:
                self.families.add(family)
            else:
                self.cells.add(bytes(column))
        self.before = before

    @property
    def everything(self) -> bool:
        return not self.families and not self.cells

    def named_families(self) -> set[bytes]:
        return self.families | {parse(c)[0] for c in self.cells}

    def check(self, table: str, families: Iterable[str]) -> None:
        """Refuse families the table does not have, as HBase does."""
        known = {f.encode() for f in families}
        for family in sorted(self.named_families() - known):
            raise no_such_family(table, family)

    def prefilter(self) -> Sequence[bytes] | None:
        """A coarser filter in the embedded store's terms (``b"f:"`` = family), to read less."""
        if self.everything:
            return None
        return [f + b":" for f in sorted(self.named_families())]

    def pick(self, cells: Cells) -> Cells:
        return {col: cell for col, cell in cells.items() if self._wanted(col) and self._in_time(cell[1])}

    def _wanted(self, col: bytes) -> bool:
        return self.everything or col in self.cells or parse(col)[0] in self.families

    def _in_time(self, ts: int) -> bool:
        return self.before is None or ts < self.before
