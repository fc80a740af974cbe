"""What operators read: run history and one run's status, for a terminal or as JSON."""
from __future__ import annotations

import dataclasses
import datetime
import json

from rich.console import Console
from rich.cells import cell_len
from rich.table import Table
from rich.text import Text

from typing import Callable, Mapping

from swarm.errors import SwarmError
from swarm.ledger import Ledger, Run


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _took(run: Run) -> str:
    end = run.finished_at or run.updated_at
    return f"{end - run.created_at:.1f}s"


def run_dict(run: Run) -> dict:
    return dataclasses.asdict(run) | {"params": dict(run.params)}


RUN_COLUMNS = ("run", "status", "phase", "started", "took", "error")
MIN_ERROR_WIDTH = 16  # narrower, an error says nothing: the column goes
SHORT_STARTED = slice(5, 16)  # "2026-11-22 02:00:13" -> "11-22 02:00"


def print_runs(runs: list[Run], as_json: bool = False, console: Console | None = None) -> None:
    if as_json:
        print(json.dumps([run_dict(r) for r in runs], indent=2))
        return
    console = console or Console()
    console.print(runs_table(runs, console.width))


def runs_table(runs: list[Run], width: int) -> Table:
    """The run history within ``width`` columns.

    On a narrow terminal the error gives way first (cut, then left out),
    then the started time (shortened, then left out), then phase and took;
    never the run id or the status, which are what an operator types next.
    """
    rows = [_run_cells(r) for r in runs]
    widths = {name: max([len(name), *(cell_len(row[name]) for row in rows)]) for name in RUN_COLUMNS}
    _fit_error(widths, width)
    if _table_width(widths) > width:
        rows = [row | {"started": row["started"][SHORT_STARTED]} for row in rows]
        widths["started"] = max(len("started"), *(len(row["started"]) for row in rows))
    for name in ("started", "phase", "took"):
        if _table_width(widths) > width:
            del widths[name]
    return _table(rows, widths, borders=_table_width(widths) <= width)


def _run_cells(run: Run) -> dict[str, str]:
    error = run.error.splitlines()[0][:80] if run.error else ""
    return {"run": run.id, "status": run.status, "phase": run.phase or "", "started": _when(run.created_at),
            "took": _took(run), "error": error}


def _table_width(widths: dict[str, int]) -> int:
    return sum(widths.values()) + 3 * len(widths) + 1  # a border and a space each side of every cell


def _fit_error(widths: dict[str, int], width: int) -> None:
    """Cut the error column to what room is left, or leave it out when that is too little."""
    if _table_width(widths) <= width:
        return
    room = width - _table_width(widths) + widths["error"]
    if room >= MIN_ERROR_WIDTH:
        widths["error"] = room
    else:
        del widths["error"]


def _table(rows: list[dict[str, str]], widths: dict[str, int], borders: bool = True) -> Table:
    """With ``borders`` False (even the id and the status do not fit), the id folds onto more lines."""
    table = Table() if borders else Table.grid(padding=(0, 1))
    for name, size in widths.items():
        if name == "run":
            table.add_column(name, no_wrap=borders, min_width=size if borders else None, overflow="fold")
        elif name == "status":
            table.add_column(name, no_wrap=True, width=size)
        else:
            table.add_column(name, no_wrap=True, max_width=size if name == "error" else None, overflow="ellipsis")
    for row in rows:
        colour = {"done": "green", "failed": "red"}.get(row["status"], "yellow")
        # Text, not markup: an error may hold brackets that rich would read as styles.
        table.add_row(*(Text(row[name], style=colour if name == "status" else "") for name in widths))
    return table


RATE_WINDOW = 60.0  # seconds of history behind a stage's rate


def stage_dict(run: Run, ledger: Ledger, queues: Mapping[str, str], depth: Callable[[str], int] | None) -> dict:
    """Per stage: its queue, messages waiting there now, and messages done per second lately."""
    recent = ledger.done_since(run.id, ledger.now() - RATE_WINDOW)
    out = {}
    for stage, queue in queues.items():
        try:
            waiting = depth(queue) if depth else None
        except SwarmError:
            waiting = None  # the broker is unreachable: show the rest
        out[stage] = {"queue": queue, "depth": waiting, "rate_per_s": round(recent.get(stage, 0) / RATE_WINDOW, 2)}
    return out


def status_dict(run: Run, ledger: Ledger, stages: dict | None = None) -> dict:
    return {
        "run": run_dict(run),
        "messages": ledger.chunk_counts(run.id),
        "stages": stages or {},
        "counters": ledger.counters(run.id),
        "failures": [dataclasses.asdict(f) for f in ledger.failures(run.id)],
    }


def print_status(run: Run, ledger: Ledger, as_json: bool = False, stages: dict | None = None) -> None:
    doc = status_dict(run, ledger, stages)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    console = Console()
    console.print(f"[bold]{run.id}[/]  {run.status}  phase {run.phase or '-'}  started {_when(run.created_at)}  "
                  f"took {_took(run)}")
    if run.error:
        console.print(f"[red]error:[/] {run.error}")
    table = Table("phase", "planned", "queued", "claimed", "done", "dead", "aborted")
    for phase, states in doc["messages"].items():
        table.add_row(phase, *(str(states.get(s, 0)) for s in ("planned", "queued", "claimed", "done", "dead", "aborted")))
    console.print(table)
    if doc["stages"]:
        queues = Table("stage", "queue", "waiting", "done/s (last minute)")
        for stage, info in doc["stages"].items():
            waiting = "unavailable" if info["depth"] is None else str(info["depth"])
            queues.add_row(stage, info["queue"], waiting, f"{info['rate_per_s']:.2f}")
        console.print(queues)
    if doc["counters"]:
        console.print("counters: " + ", ".join(f"{k}={v:,}" for k, v in sorted(doc["counters"].items())))
    for f in doc["failures"]:
        console.print(f"[yellow]{f['state']}[/] {f['id']} (attempts {f['attempts']}):\n{f['error']}")
