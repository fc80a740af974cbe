"""Effects: what a handler asks for, as plain data. The framework applies them."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, Union

from swarm.errors import PluginError

Bytes = Union[bytes, str]


def to_bytes(value: Bytes | int | float) -> bytes:
    """Table keys and values are bytes; str is UTF-8, numbers their decimal text."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value).encode()
    raise PluginError(f"table keys and values must be bytes, str or numbers, got {type(value).__name__}")


class _Write:
    """Equal to a write of its kind that writes the same bytes, as the table store sees it."""

    table: str
    row: Bytes

    def normalized(self) -> "_Write":
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return _written(self) == _written(other)

    def __hash__(self) -> int:
        return hash(_written(self))


@dataclasses.dataclass(frozen=True, eq=False)
class Put(_Write):
    """Write cells ``{"family:qualifier": value}`` into one row.

    Two puts are equal when they write the same bytes: ``{"d:n": 2}`` and
    ``{b"d:n": b"2"}`` are one write, as the table store sees it.
    """

    table: str
    row: Bytes
    cells: Mapping[Bytes, Bytes | int | float]

    def normalized(self) -> "Put":
        if not isinstance(self.cells, Mapping) or not self.cells:
            raise PluginError(f"Put to {self.table} needs a non-empty map of cells, got {_shown(self.cells)}")
        cells: dict[Bytes, Bytes | int | float] = {to_bytes(k): to_bytes(v) for k, v in self.cells.items()}
        for column in cells:
            if b":" not in column:
                raise PluginError(f"column {column!r} in Put to {self.table} must be 'family:qualifier'")
        return Put(self.table, to_bytes(self.row), cells)



@dataclasses.dataclass(frozen=True, eq=False)
class Delete(_Write):
    """Delete a row, or only the named columns of it; equal to another that deletes the same bytes."""

    table: str
    row: Bytes
    columns: tuple[Bytes, ...] | None = None

    def normalized(self) -> "Delete":
        cols = None if self.columns is None else tuple(to_bytes(c) for c in self.columns)
        for column in cols or ():
            if b":" not in column:
                raise PluginError(f"column {column!r} in Delete from {self.table} must be 'family:qualifier' "
                                  "or 'family:'")
        return Delete(self.table, to_bytes(self.row), cols)



def _written(m: _Write) -> tuple[Any, ...]:
    """What ``m`` writes, for comparing: its normalised form, or its fields as given when it has none."""
    try:
        n = m.normalized()
    except PluginError:
        return (type(m).__name__, m.table, repr(m.row), repr(getattr(m, "cells", getattr(m, "columns", None))))
    if isinstance(n, Put):
        return ("Put", n.table, n.row, tuple(sorted(n.cells.items())))
    assert isinstance(n, Delete)
    return ("Delete", n.table, n.row, n.columns)


@dataclasses.dataclass(frozen=True)
class Send:
    """A message for a next stage of the same run and phase.

    ``key`` makes the child's id; it defaults to the position among the
    handler's Sends, so a handler that always emits the same Sends in the same
    order gets the same ids on a rerun.
    """

    stage: str
    payload: Mapping[str, Any]
    key: str | None = None


@dataclasses.dataclass(frozen=True)
class Continue:
    """The rest of this message's work: the next message of the same stage, with ``payload``.

    A handler that works through a key range a slice at a time returns its
    slice's effects and a ``Continue`` of the rest (``swarm.slices.slice_of``
    makes one); the rest is recorded with the slice done and runs as the next
    slice, whose ``ctx.slice`` follows from this one's. A stage need not list
    itself in ``next`` to continue, and a handler continues at most once.
    ``estimate``: about how many rows the rest holds, when the handler can
    tell (``slice_of`` does, from the slice it read); it only weighs whether
    the rest is worth splitting, and is not part of the message.
    """

    payload: Mapping[str, Any]
    estimate: float | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(frozen=True)
class Count:
    """Add ``value`` to a named counter of the run (counted once per message)."""

    name: str
    value: int = 1


def normalized(mutations: Iterable[Put | Delete]) -> list[Put | Delete]:
    """Puts and deletes with bytes keys and values, checked: what a table store writes."""
    out = []
    for m in mutations:
        if not isinstance(m, (Put, Delete)):
            raise PluginError(f"a table write must be a Put or a Delete, got {_shown(m)}")
        out.append(m.normalized())
    return out


Effect = Union[Put, Delete, Send, Continue, Count]
EFFECT_TYPES = (Put, Delete, Send, Continue, Count)
EXPECTED = "expected Put, Delete, Send, Continue or Count"


@dataclasses.dataclass
class Effects:
    """A handler's effects, sorted by kind and validated."""

    mutations: list[Put | Delete] = dataclasses.field(default_factory=list)
    sends: list[Send] = dataclasses.field(default_factory=list)
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    continued: Continue | None = None

    @classmethod
    def collect(cls, returned: Iterable[Effect] | Effect | None,
                declared: Mapping[str, Any] | None = None) -> "Effects":
        """Accept what a handler returned: None, one effect, or an iterable of them (where None is skipped).

        ``declared``: the job's tables (``swarm.stage.TableSpec`` by name), when
        it declares any; a write to another table or family is then refused.
        """
        if returned is None:
            items: Iterable[Any] = ()
        elif isinstance(returned, EFFECT_TYPES):
            items = (returned,)
        elif isinstance(returned, (str, bytes, Mapping)):
            raise PluginError(f"a handler returned {_shown(returned)}; {EXPECTED}, or a list of them")
        else:
            items = returned
        out = cls()
        for item in items:
            out._add(item, declared)
        return out

    def _add(self, item: Any, declared: Mapping[str, Any] | None = None) -> None:
        if isinstance(item, (Put, Delete)):
            mutation = item.normalized()
            if declared is not None:
                _check_declared(mutation, declared)
            self.mutations.append(mutation)
        elif isinstance(item, Send):
            self.sends.append(item)
        elif isinstance(item, Continue):
            if self.continued is not None:
                raise PluginError("a handler returned two Continue effects; a message hands on one rest at most")
            if not isinstance(item.payload, Mapping):
                raise PluginError(f"Continue needs a map payload, got {_shown(item.payload)}")
            self.continued = item
        elif isinstance(item, Count):
            if not isinstance(item.value, int) or isinstance(item.value, bool):
                raise PluginError(f"Count({item.name!r}) value must be an int, got {item.value!r}")
            self.counts[item.name] = self.counts.get(item.name, 0) + item.value
        elif item is not None:  # None: e.g. the rest of a range that has none
            raise PluginError(f"a handler returned {_shown(item)}; {EXPECTED}")


def _check_declared(mutation: Put | Delete, declared: Mapping[str, Any]) -> None:
    """A write to a table the job declares, and to its families only."""
    kind = type(mutation).__name__  # mutation is normalised: its columns are bytes
    spec = declared.get(mutation.table)
    if spec is None:
        raise PluginError(f"{kind} to table {mutation.table!r}, which the job does not declare "
                          f"(it declares: {', '.join(sorted(declared)) or 'none'})")
    columns = mutation.cells if isinstance(mutation, Put) else (mutation.columns or ())
    for column in columns:
        family = to_bytes(column).split(b":", 1)[0].decode(errors="replace")
        if family not in spec.families:
            raise PluginError(f"{kind} to {mutation.table}: column family {family!r} is not declared "
                              f"(the table has {', '.join(spec.families)})")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."
