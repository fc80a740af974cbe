"""What operators read: run history and one run's status, for a terminal or as JSON."""
from __future__ import annotations

import dataclasses
import datetime
import json
import time
from typing import Callable, Mapping

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from swarm.context import source_of
from swarm.errors import SwarmError
from swarm.fleetcontrol import describe_line
from swarm.fleetcontrol import summary as control_summary
from swarm.ledger import HistoryLedger, MessageState, Run, RunStatus


def when(ts: float | None) -> str:
    """A time as the local ``YYYY-MM-DD HH:MM:SS``; empty for none."""
    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def took(run: Run, now: float | None = None) -> str:
    """How long a finished run took; how long a running one has been running, until ``now``."""
    if run.status == RunStatus.RUNNING:
        end = time.time() if now is None else now
    else:
        end = run.finished_at or run.updated_at
    return duration(max(0.0, end - run.created_at))


def duration(seconds: float) -> str:
    """``12.3s``, ``4m 05s``, ``2h 07m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def run_dict(run: Run) -> dict:
    return dataclasses.asdict(run) | {"params": dict(run.params)}


RUN_COLUMNS = ("run", "status", "phase", "started", "took", "error")
MIN_ERROR_WIDTH = 16  # narrower, an error says nothing: the column goes
SHORT_STARTED = slice(5, 16)  # "2026-11-22 02:00:13" -> "11-22 02:00"


def print_runs(runs: list[Run], as_json: bool = False, console: Console | None = None,
               now: float | None = None) -> None:
    if as_json:
        print(json.dumps([run_dict(r) for r in runs], indent=2))
        return
    console = console or Console()
    console.print(runs_table(runs, console.width, now))


def runs_table(runs: list[Run], width: int, now: float | None = None) -> Table:
    """The run history within ``width`` columns.

    On a narrow terminal the error gives way first (cut, then left out),
    then the started time (shortened, then left out), then phase and took;
    never the run id or the status, which are what an operator types next.
    """
    rows = [_run_cells(r, now) for r in runs]
    widths = {name: max([len(name), *(cell_len(row[name]) for row in rows)]) for name in RUN_COLUMNS}
    _fit_error(widths, width)
    if _table_width(widths) > width:
        rows = [row | {"started": row["started"][SHORT_STARTED]} for row in rows]
        widths["started"] = max(len("started"), *(len(row["started"]) for row in rows))
    for name in ("started", "phase", "took"):
        if _table_width(widths) > width:
            del widths[name]
    return _table(rows, widths, borders=_table_width(widths) <= width)


def _run_cells(run: Run, now: float | None = None) -> dict[str, str]:
    error = run.error.splitlines()[0][:80] if run.error else ""
    return {"run": run.id, "status": run.status, "phase": run.phase or "", "started": when(run.created_at),
            "took": took(run, now), "error": error}


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
        colour = {"done": "green", "failed": "red", "rejected": "red"}.get(row["status"], "yellow")
        # Text, not markup: an error may hold brackets that rich would read as styles.
        table.add_row(*(Text(row[name], style=colour if name == "status" else "") for name in widths))
    return table


RATE_WINDOW = 60.0  # seconds of history behind a stage's rate


def stage_dict(run: Run, ledger: HistoryLedger, queues: Mapping[str, str], depth: Callable[[str], int] | None) -> dict:
    """Per stage: its queue, messages waiting there now, and messages done per second lately."""
    recent = ledger.done_since(run.id, ledger.now() - RATE_WINDOW)
    return {stage: {"queue": queue, "depth": waiting(depth, queue),
                    "rate_per_s": round(recent.get(stage, 0) / RATE_WINDOW, 2)} for stage, queue in queues.items()}


def waiting(depth: Callable[[str], int] | None, queue: str) -> int | None:
    """Messages waiting on ``queue`` now; None when there is no broker to ask, or it cannot be reached."""
    if depth is None:
        return None
    try:
        return depth(queue)
    except SwarmError:
        return None  # the broker is unreachable: show the rest


FAILURES_SHOWN = 100  # of each kind, latest first


def status_dict(run: Run, ledger: HistoryLedger, stages: dict | None = None) -> dict:
    """``failures``: messages dead, aborted or waiting to be retried; ``recovered``: done in the end, with
    the last error they met on the way."""
    def listed(recovered: bool) -> list[dict]:
        return [dataclasses.asdict(f) for f in ledger.failures(run.id, FAILURES_SHOWN, recovered=recovered)]

    publication = ledger.publication(source_of(run.id))
    return {
        "run": run_dict(run),
        # what operators put in force on the run's job (`swarm ctl`): only a running run is steered by it
        "control": control_summary(ledger, run.job) if run.status == RunStatus.RUNNING else None,
        "messages": ledger.chunk_counts(run.id),
        "stages": stages or {},
        "counters": ledger.counters(run.id),
        "checks": [dataclasses.asdict(c) for c in ledger.checks(run.id)],
        "publication": None if publication is None else dataclasses.asdict(publication),
        "decisions": [dataclasses.asdict(d) for d in ledger.decisions(run.id)],
        "failures": listed(False),
        "recovered": listed(True),
    }


def print_status(run: Run, ledger: HistoryLedger, as_json: bool = False, stages: dict | None = None,
                 console: Console | None = None) -> None:
    doc = status_dict(run, ledger, stages)
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    # soft_wrap: long lines stay whole and uncut, so a traceback reads (and copies) as it was recorded.
    (console or Console()).print(status_view(run, doc), soft_wrap=True)


def watch_status(load: Callable[[], tuple[Run, dict]], interval: float, console: Console | None = None,
                 refreshes: int | None = None, sleep: Callable[[float], None] = time.sleep) -> Run:
    """The status from ``load()``, redrawn in place every ``interval`` seconds.

    Until the run is no longer running, ``refreshes`` views have been shown,
    or Ctrl-C; returns the run as last seen.
    """
    run, doc = load()
    shown = 1
    with Live(status_view(run, doc), console=console or Console(), auto_refresh=False) as live:
        try:
            while run.status == RunStatus.RUNNING and (refreshes is None or shown < refreshes):
                sleep(interval)
                run, doc = load()
                live.update(status_view(run, doc), refresh=True)
                shown += 1
        except KeyboardInterrupt:
            pass  # the way to stop watching a run that goes on
    return run


def status_view(run: Run, doc: dict, now: float | None = None) -> RenderableType:
    """One run's status; every text from the ledger as ``Text``, so brackets in it are not read as styles."""
    how_long = f"running for {took(run, now)}" if run.status == RunStatus.RUNNING else f"took {took(run, now)}"
    parts: list[RenderableType] = [Text.assemble(
        (run.id, "bold"), f"  {run.status}  phase {run.phase or '-'}  started {when(run.created_at)}  {how_long}")]
    if run.error:
        parts.append(Text.assemble(("error: ", "red"), run.error))
    control = describe_line(doc["control"]) if doc.get("control") else ""
    if control:
        parts.append(Text.assemble(("control: ", "yellow"), control, " (`swarm ctl status` says by whom and why)"))
    parts.append(_phase_table(doc["messages"]))
    if doc["stages"]:
        parts.append(_stage_table(doc["stages"]))
    if doc["counters"]:
        parts.append(Text("counters: " + ", ".join(f"{k}={v:,}" for k, v in sorted(doc["counters"].items()))))
    if doc.get("checks"):
        parts.append(_check_table(doc["checks"]))
    parts += _publication_view(run, doc.get("publication"), doc.get("decisions", []))
    parts += _failure_view(doc["failures"])
    parts += _recovered_view(doc.get("recovered", []))
    return Group(*parts)


MESSAGE_STATES = ("planned", "queued", "claimed", "done", "dead", "aborted")


def _phase_table(messages: Mapping[str, Mapping[str, int]]) -> Table:
    table = Table("phase", *MESSAGE_STATES)
    for phase, states in messages.items():
        table.add_row(Text(phase), *(str(states.get(s, 0)) for s in MESSAGE_STATES))
    return table


def _stage_table(stages: Mapping[str, Mapping]) -> Table:
    table = Table("stage", "queue", "waiting", "done/s (last minute)")
    for stage, info in stages.items():
        waiting = "unavailable" if info["depth"] is None else str(info["depth"])
        table.add_row(Text(stage), Text(info["queue"]), waiting, f"{info['rate_per_s']:.2f}")
    return table


def _check_table(checks: list[dict]) -> Table:
    """Each check of the result: passed or failed, measured against expected, within what tolerance."""
    table = Table("check", "result", "measured", "expected", "tolerance", "detail", title="checks",
                  title_justify="left")
    for c in checks:
        verdict = Text("pass", style="green") if c["passed"] else Text("FAIL", style="red")
        table.add_row(Text(c["name"]), verdict, _number(c["measured"]), _number(c["expected"]), Text(c["tolerance"]),
                      Text(c["detail"]))
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:,.6g}"


def _publication_view(run: Run, publication: dict | None, decisions: list[dict]) -> list[Text]:
    """Whether the night shows this run's result, and what operators decided about the run."""
    parts = []
    if publication is not None:
        if publication["run_id"] == run.id:
            line = f"result: {publication['state']} (the night shows this run's result)"
        else:
            line = f"result: the night shows {publication['run_id']}'s result ({publication['state']})"
        parts.append(Text(line))
    elif run.status == RunStatus.HELD:
        parts.append(Text("result: held; the night shows no published result"))
    for d in decisions:
        parts.append(Text.assemble((f"{d['action']} ", "bold"), f"by an operator at {when(d['at'])}: ", d["reason"]))
    return parts


def _failure_view(failures: list[dict]) -> list[Text]:
    """Each failure with its whole error (a traceback, as recorded)."""
    if not failures:
        return []
    parts = [Text(f"failures ({_count(failures)}, latest first):", style="bold")]
    for f in failures:
        label = f["state"] if f["state"] in (MessageState.DEAD, MessageState.ABORTED) else "retrying"
        parts.append(Text.assemble((label, "red" if label != "retrying" else "yellow"),
                                   f" {f['id']} (attempts {f['attempts']}):"))
        parts.append(Text(f["error"] or "(no error recorded)"))
    return parts


def _recovered_view(recovered: list[dict]) -> list[Text]:
    """Messages done in the end: the last error each met, on one line; ``--json`` has the whole of it."""
    if not recovered:
        return []
    parts = [Text(f"recovered ({_count(recovered)}): done after failing first; the last error each met:",
                  style="bold")]
    for f in recovered:
        parts.append(Text.assemble(("done", "green"), f" {f['id']} after {f['attempts']} attempts: ",
                                   _last_line(f["error"])))
    return parts


def _count(items: list) -> str:
    return f"the latest {len(items)}" if len(items) >= FAILURES_SHOWN else str(len(items))


def _last_line(error: str | None) -> str:
    """A traceback's last line names the exception and its message."""
    lines = [line for line in (error or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no error recorded)"
