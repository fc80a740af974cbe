"""Everyday table work from the command line: create a job's tables, load rows, scan, count, drop.

Rows are loaded from JSON Lines (one object per line) or CSV (a header
line): one field is the row key, the others are ``family:qualifier``
columns. Values are text or numbers; the table store normalises them on
the way in, as it does every write.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from swarm.effects import Put
from swarm.errors import ConfigError
from swarm.stage import Job
from swarm.table import Row, TableStore

FORMATS = ("jsonl", "csv")


def create(tables: TableStore, job: Job) -> list[tuple[str, bool]]:
    """Create every table ``job`` declares (idempotent); (name, made now) for each."""
    if not job.tables:
        raise ConfigError(f"job {job.name} declares no tables: declare them with job.table(name, families)")
    existing = set(tables.tables())
    for spec in job.tables.values():
        tables.create_table(spec.name, spec.families, spec.splits)
    return [(name, name not in existing) for name in job.tables]


def load(tables: TableStore, table: str, path: Path, fmt: str | None = None, key: str = "row",
         family: str | None = None, batch: int = 1000, progress: bool = True) -> int:
    """Write the rows of ``path`` into ``table`` in batches; returns how many."""
    fmt = fmt or _format_of(path)
    if table not in tables.tables():
        raise ConfigError(f"table {table!r} does not exist; create it first (`swarm tables create JOB`)")
    loaded = 0
    with open(path, newline="") as source, _bar(path, progress) as bar:
        pending: list[Put] = []
        for number, record in _records(source, fmt, path.name):
            pending.append(_put(table, record, key, family, f"{path.name}, line {number}"))
            if len(pending) >= batch:
                loaded += _flush(tables, pending, bar)
        loaded += _flush(tables, pending, bar)
    return loaded


def scan(tables: TableStore, table: str, prefix: str | None = None, start: str = "", stop: str = "",
         columns: Iterable[str] = (), limit: int | None = None) -> Iterator[Row]:
    """Rows of ``table`` by prefix or key range, at most ``limit``."""
    cols = [c.encode() for c in columns] or None
    rows = tables.scan(table, start.encode(), stop.encode(), prefix.encode() if prefix is not None else None, cols)
    for n, row in enumerate(rows):
        if limit is not None and n >= limit:
            return
        yield row


def count(tables: TableStore, table: str, prefix: str | None = None, start: str = "", stop: str = "") -> int:
    return sum(1 for _ in scan(tables, table, prefix, start, stop))


def show(row: Row, as_json: bool = False) -> str:
    """One row as a line: readable text, or a JSON object with the key under ``row``."""
    key, cells = row
    if as_json:
        return json.dumps({"row": _text(key), **{_text(c): _text(v) for c, v in sorted(cells.items())}})
    return _text(key) + "  " + "  ".join(f"{_text(c)}={_text(v)}" for c, v in sorted(cells.items()))


def _text(value: bytes) -> str:
    """UTF-8 as itself; any other byte as a \\x escape, so every value shows and none is mistaken."""
    return value.decode("utf-8", errors="backslashreplace")


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise ConfigError(f"cannot tell the format of {path} from its name: give --format {' or '.join(FORMATS)}")


def _records(source: TextIO, fmt: str, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "csv":
        yield from ((n, rec) for n, rec in enumerate(csv.DictReader(source), start=2))
        return
    for n, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}, line {n}: not JSON: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ConfigError(f"{name}, line {n}: expected a JSON object, got {type(record).__name__}")
        yield n, record


def _put(table: str, record: dict[str, Any], key: str, family: str | None, where: str) -> Put:
    if record.get(key) in (None, ""):
        raise ConfigError(f"{where}: no row key: the field {key!r} is missing or empty (--key names another)")
    cells: dict[bytes | str, Any] = {}
    for name, value in record.items():
        if name == key:
            continue
        column = name if ":" in name else (f"{family}:{name}" if family else None)
        if column is None:
            raise ConfigError(f"{where}: field {name!r} is not a 'family:qualifier' column "
                              "(name it so, or give --family to put plain fields in one family)")
        if isinstance(value, (dict, list)) or isinstance(value, bool):
            raise ConfigError(f"{where}: field {name!r} is a {type(value).__name__}; values are text or numbers")
        if value is not None:
            cells[column] = value
    if not cells:
        raise ConfigError(f"{where}: the row {record[key]!r} has no column to write")
    return Put(table, str(record[key]), cells)


def _flush(tables: TableStore, pending: list[Put], bar: "_Bar") -> int:
    if not pending:
        return 0
    tables.apply(pending)
    n = len(pending)
    bar.advance(n)
    pending.clear()
    return n


class _Bar:
    """A progress bar on the terminal, or nothing."""

    def __init__(self, progress: Progress | None, label: str):
        self._progress = progress
        self._task = progress.add_task(label, total=None) if progress else None

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n)

    def __enter__(self) -> "_Bar":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _bar(path: Path, enabled: bool) -> _Bar:
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,} rows"),
                        TimeElapsedColumn(), transient=True) if enabled else None
    return _Bar(progress, f"loading {path.name}")
