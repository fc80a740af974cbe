"""Checks of a run's result, run after its last phase: only a result that passes them is published.

A job declares them with ``job.check(...)``: built-ins compare a measure of
the staged result with the median of the same measure in the last published
runs of the job; a custom check is a function ``(result, history)`` that
returns a ``CheckResult`` or a bool. A run with a failed check is held.
"""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from swarm.effects import Bytes, to_bytes
from swarm.errors import PluginError
from swarm.records import CheckResult
from swarm.table import Row

__all__ = ["Check", "CheckResult", "History", "Result", "as_check", "column_total", "required_columns",
           "row_count", "within"]


class Result:
    """A run's result as it waits in the staging tables: what a check reads."""

    def __init__(self, run: str, params: Mapping[str, str], counters: Mapping[str, int],
                 rows: Callable[[str], Iterator[Row]]):
        self.run, self.params, self.counters = run, dict(params), dict(counters)
        self._rows = rows

    def rows(self, table: str) -> Iterator[Row]:
        """The run's rows of published table ``table``, keyed as its handlers wrote them, in key order."""
        return self._rows(table)


class History:
    """What the last published runs of the job measured: other nights than the one checked, with the same
    params but ``date`` (a job run per region compares a region's nights with that region's)."""

    def __init__(self, values: Callable[[str, int], list[float]]):
        self._values = values

    def values(self, name: str, runs: int = 7) -> list[float]:
        """Check ``name``'s measured values in up to ``runs`` latest published runs, newest first."""
        return self._values(name, runs)


CheckFn = Callable[[Result, History], "CheckResult | bool"]


@dataclasses.dataclass(frozen=True)
class Check:
    """A named check; ``tables``: the published tables it reads (checked against the job's)."""

    name: str
    fn: CheckFn
    tables: tuple[str, ...] = ()

    def run(self, result: Result, history: History) -> CheckResult:
        """The check's verdict; an exception in it is a failed check that names the error."""
        try:
            verdict = self.fn(result, history)
        except Exception as exc:  # a broken check must hold the result, not pass it
            return CheckResult(self.name, False, detail=f"the check raised {type(exc).__name__}: {exc}")
        if isinstance(verdict, bool):
            return CheckResult(self.name, verdict)
        if not isinstance(verdict, CheckResult):
            return CheckResult(self.name, False, detail=f"the check returned {type(verdict).__name__}, "
                                                        "not a CheckResult or a bool")
        return dataclasses.replace(verdict, name=self.name)


def as_check(check: Check | CheckFn) -> Check:
    """A ``Check`` as given, or a function made one, named after it."""
    if isinstance(check, Check):
        return check
    if callable(check):
        return Check(getattr(check, "__name__", "check"), check)
    raise PluginError(f"job.check takes a check (swarm.checks.row_count(...), ...) or a function, got {check!r}")


def within(name: str, measured: float, history: Sequence[float], tolerance: float, min_runs: int) -> CheckResult:
    """``measured`` within ``tolerance`` (a fraction) of the median of ``history``; passes while history is short."""
    shown = f"±{tolerance:.0%} of the median of the last {len(history)} published run(s)"
    if len(history) < min_runs:
        return CheckResult(name, True, measured, None, shown,
                           f"only {len(history)} published run(s) to compare with, fewer than {min_runs}: not compared")
    expected = statistics.median(history)
    passed = abs(measured - expected) <= tolerance * abs(expected)
    return CheckResult(name, passed, measured, expected, shown,
                       "" if passed else f"{measured:g} is {_off(measured, expected)} the expected {expected:g}")


def _off(measured: float, expected: float) -> str:
    if not expected:
        return "away from"
    return f"{abs(measured - expected) / abs(expected):.1%} {'under' if measured < expected else 'over'}"


def row_count(table: str, tolerance: float = 0.2, runs: int = 7, min_runs: int = 3, name: str | None = None) -> Check:
    """The run's row count of ``table`` within ±``tolerance`` of the median of the last ``runs`` published runs."""
    name = name or f"row_count:{table}"
    _check_tolerance(name, tolerance, runs, min_runs)

    def fn(result: Result, history: History) -> CheckResult:
        count = sum(1 for _ in result.rows(table))
        return within(name, count, history.values(name, runs), tolerance, min_runs)

    return Check(name, fn, (table,))


def column_total(table: str, column: Bytes, tolerance: float = 0.2, runs: int = 7, min_runs: int = 3,
                 name: str | None = None) -> Check:
    """The sum of numeric ``column`` over the run's rows of ``table``, within ±``tolerance`` of the median."""
    col = to_bytes(column)
    name = name or f"total:{table}:{col.decode(errors='replace')}"
    _check_tolerance(name, tolerance, runs, min_runs)

    def fn(result: Result, history: History) -> CheckResult:
        total = 0.0
        for key, cells in result.rows(table):
            if col in cells:
                total += _number(cells[col], key, col)
        return within(name, total, history.values(name, runs), tolerance, min_runs)

    return Check(name, fn, (table,))


def required_columns(table: str, columns: Iterable[Bytes], name: str | None = None) -> Check:
    """Every one of the run's rows of ``table`` has each of ``columns``, and there is at least one row."""
    wanted = [to_bytes(c) for c in columns]
    name = name or f"columns:{table}"

    def fn(result: Result, history: History) -> CheckResult:
        rows = missing = 0
        first = ""
        for key, cells in result.rows(table):
            rows += 1
            absent = [c.decode(errors="replace") for c in wanted if c not in cells]
            if absent:
                missing += 1
                first = first or f"row {key[:60]!r} lacks {', '.join(absent)}"
        if not rows:
            return CheckResult(name, False, 0, None, "every row", "the result has no rows")
        detail = f"{missing} of {rows} row(s) lack a required column; first: {first}" if missing else ""
        return CheckResult(name, not missing, missing, 0, "every row", detail)

    return Check(name, fn, (table,))


def _number(value: bytes, key: bytes, column: bytes) -> float:
    try:
        return float(value)
    except ValueError:
        raise PluginError(f"row {key[:60]!r} column {column.decode(errors='replace')}: "
                          f"{value[:60]!r} is not a number") from None


def _check_tolerance(name: str, tolerance: float, runs: int, min_runs: int) -> None:
    if not 0 <= tolerance or not 1 <= min_runs <= runs:
        raise PluginError(f"check {name}: need tolerance >= 0 and 1 <= min_runs <= runs")


def evaluate(checks: Iterable[Check], result: Result, history: History) -> list[CheckResult]:
    """Every check's verdict, in declaration order."""
    return [c.run(result, history) for c in checks]


def summary(results: Sequence[CheckResult]) -> str:
    """One line naming the failed checks with their values, for a held run's error."""
    failed = [r for r in results if not r.passed]
    return f"{len(failed)} of {len(results)} check(s) failed: " + "; ".join(map(_failed, failed))


def _failed(r: CheckResult) -> str:
    values = "" if r.measured is None and r.expected is None else \
        f": measured {_num(r.measured)}, expected {_num(r.expected)} {r.tolerance}".rstrip()
    return r.name + values + (f" ({r.detail})" if r.detail else "")


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:g}"
