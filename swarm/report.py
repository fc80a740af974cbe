"""What operators read: run history and one run's status, for a terminal or as JSON."""
from __future__ import annotations

import dataclasses
import datetime
import json

from rich.console import Console
from rich.table import Table

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
