"""What operators read: run history and one run's status, for a terminal or as JSON."""
from __future__ import annotations

import dataclasses
import datetime
import json

from rich.console import Console
from rich.table import Table

from swarm.ledger import Ledger, Run


def _when(ts: float | None) -> str:
    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _took(run: Run) -> str:
    end = run.finished_at or run.updated_at
    return f"{end - run.created_at:.1f}s"


def run_dict(run: Run) -> dict:
    return dataclasses.asdict(run) | {"params": dict(run.params)}


def print_runs(runs: list[Run], as_json: bool = False) -> None:
    if as_json:
        print(json.dumps([run_dict(r) for r in runs], indent=2))
        return
    table = Table("run", "status", "phase", "started", "took", "error")
    for r in runs:
        colour = {"done": "green", "failed": "red"}.get(r.status, "yellow")
        error = (r.error or "").splitlines()[0][:80] if r.error else ""
        table.add_row(r.id, f"[{colour}]{r.status}", r.phase or "", _when(r.created_at), _took(r), error)
    Console().print(table)


def status_dict(run: Run, ledger: Ledger) -> dict:
    return {
        "run": run_dict(run),
        "messages": ledger.chunk_counts(run.id),
        "counters": ledger.counters(run.id),
        "failures": [dataclasses.asdict(f) for f in ledger.failures(run.id)],
    }


def print_status(run: Run, ledger: Ledger, as_json: bool = False) -> None:
    doc = status_dict(run, ledger)
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
    if doc["counters"]:
        console.print("counters: " + ", ".join(f"{k}={v:,}" for k, v in sorted(doc["counters"].items())))
    for f in doc["failures"]:
        console.print(f"[yellow]{f['state']}[/] {f['id']} (attempts {f['attempts']}):\n{f['error']}")
