"""What the console's pages show, as plain data from the ledger (and the broker's queue depths)."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from swarm.dlq import UNVERIFIED, envelope_doc, hex_text, payload_text
from swarm.envelope import peek
from swarm.fleetcontrol import describe_line
from swarm.ledger import HistoryLedger, MessageState, Run, RunStatus
from swarm.report import MESSAGE_STATES, RATE_WINDOW, duration, status_dict, took, waiting, when

BUCKET = 10.0  # seconds of the buckets a stage's rate over the last minute is summed from
POINTS = 120  # most points of a throughput plot, a run of any length: its buckets grow with the run
NICE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
OPEN_STATES = (MessageState.PLANNED, MessageState.QUEUED, MessageState.CLAIMED)
STATES = MESSAGE_STATES  # the columns of the phase and stage tables
ROWS_COUNTER = "rows"  # the counter the ETA goes by: rows a message read (swarm.slices counts it)


def run_row(run: Run, ledger: HistoryLedger) -> dict[str, Any]:
    """A line of the runs page."""
    return {"id": run.id, "job": run.job, "status": str(run.status), "phase": run.phase or "",
            "started": when(run.created_at), "took": took(run), "error": first_line(run.error),
            "counters": ledger.counters(run.id)}


def first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= limit else line[:limit] + "…"


def run_detail(run: Run, ledger: HistoryLedger) -> dict[str, Any]:
    """One run's page, but for its stages (``stage_rows``): what ``swarm status`` shows, for the templates."""
    doc = status_dict(run, ledger)
    return {
        "run": run, "status": str(run.status), "started": when(run.created_at), "took": took(run),
        "running": run.status == RunStatus.RUNNING,
        "phases": [{"phase": phase, "counts": [states.get(MessageState(s), 0) for s in MESSAGE_STATES]}
                   for phase, states in doc["messages"].items()],
        "counters": sorted(doc["counters"].items()),
        "checks": doc["checks"],
        "publication": doc["publication"],
        "decisions": [{**d, "at": when(d["at"])} for d in doc["decisions"]],
        "control": describe_line(doc["control"]) if doc["control"] else "",
        "failures": [_failure(f) for f in doc["failures"]],
        "recovered": [_failure(f) for f in doc["recovered"]],
    }


def _failure(f: dict[str, Any]) -> dict[str, Any]:
    state = f["state"]
    label = str(state) if state in (MessageState.DEAD, MessageState.ABORTED) else (
        "recovered" if state == MessageState.DONE else "retrying")
    return {"id": f["id"], "stage": f["stage"], "chunk": f["chunk"], "label": label, "attempts": f["attempts"],
            "error": f["error"] or "(no error recorded)", "when": when(f["updated_at"])}


def stage_rows(run: Run, ledger: HistoryLedger, queues: Mapping[str, str] | None,
               depth: Callable[[str], int] | None, now: float | None = None) -> list[dict[str, Any]]:
    """Per stage: messages by state, queue depth, rate, rows, and an ETA by rows (by messages where no rows
    are counted)."""
    now = ledger.now() if now is None else now
    counts = ledger.stage_counts(run.id)
    series = ledger.done_series(run.id, BUCKET, ROWS_COUNTER)
    stages = list(queues) if queues is not None else sorted(counts)
    # A run younger than the window has worked for less than it: its pace is over the time it has had.
    window = max(BUCKET, min(RATE_WINDOW, now - run.created_at))
    rows = []
    for stage in stages:
        by_state = counts.get(stage, {})
        points = series.get(stage, [])
        recent = [p for p in points if p[0] + BUCKET > now - window]
        rows.append(_stage_row(stage, by_state, points, recent, window, queues, depth))
    return rows


def _stage_row(stage: str, by_state: Mapping[MessageState, int], points: Sequence[tuple[float, int, int]],
               recent: Sequence[tuple[float, int, int]], window: float, queues: Mapping[str, str] | None,
               depth: Callable[[str], int] | None) -> dict[str, Any]:
    open_ = sum(by_state.get(s, 0) for s in OPEN_STATES)
    done = by_state.get(MessageState.DONE, 0)
    rows_done = sum(p[2] for p in points)
    rate = sum(p[1] for p in recent) / window
    rows_rate = sum(p[2] for p in recent) / window
    return {
        "stage": stage, "queue": queues.get(stage, "") if queues else "",
        "counts": [by_state.get(MessageState(s), 0) for s in STATES],
        "depth": waiting(depth, queues[stage]) if queues else None,
        "rate": round(rate, 2), "rows": rows_done, "rows_rate": round(rows_rate, 1),
        "eta": eta(open_, done, rows_done, rate, rows_rate),
    }


def eta(open_: int, done: int, rows_done: int, rate: float, rows_rate: float) -> str:
    """How long the stage's open messages take at the last minute's pace: by rows when rows are counted."""
    if open_ == 0:
        return "done" if done else ""
    if rows_done and done and rows_rate > 0:
        return f"{duration(open_ * (rows_done / done) / rows_rate)} (by rows)"
    if rate > 0:
        return f"{duration(open_ / rate)} (by messages)"
    return "none done yet" if not done else "no progress in the last minute"


def throughput(run: Run, ledger: HistoryLedger, now: float | None = None) -> dict[str, Any]:
    """The plot's data, as uPlot takes it: times, then messages done a second in each bucket, per stage."""
    end = (ledger.now() if now is None else now) if run.status == RunStatus.RUNNING else (
        run.finished_at or run.updated_at)
    bucket = plot_bucket(end - run.created_at)
    series = ledger.done_series(run.id, bucket, ROWS_COUNTER)
    start = run.created_at - run.created_at % bucket
    count = int((end - start) // bucket) + 1
    xs = [start + i * bucket for i in range(count)]
    stages = sorted(series)
    ys = []
    for stage in stages:
        line = [0.0] * count
        for t, n, _rows in series[stage]:
            i = int(round((t - start) / bucket))
            if 0 <= i < count:
                line[i] += n / bucket
        ys.append([round(v, 3) for v in line])
    return {"stages": stages, "data": [xs, *ys], "bucket": bucket}


def plot_bucket(seconds: float) -> float:
    """Seconds a point of the plot stands for: the first round span that gives a run at most ``POINTS`` points."""
    return next((b for b in NICE_BUCKETS if seconds / b <= POINTS), NICE_BUCKETS[-1])


def dead_letter_view(record: Any, ledger: Any) -> dict[str, Any]:
    """One dead letter: its fields, its body decoded (unverified), and its message's attempts."""
    env = peek(record.body)
    info = ledger.message_info(record.message_id) if record.message_id else None
    return {
        "record": record, "created": when(record.created_at), "replayed": when(record.replayed_at),
        "envelope": envelope_doc(env) if env is not None else None, "unverified": UNVERIFIED,
        "payload": payload_text(env, "`swarm dlq show --json` has all") if env is not None else "",
        "hex": hex_text(record.body) if env is None else "",
        "attempts": info.attempts if info else None, "state": str(info.state) if info else "",
        "error": info.error if info else None,
    }


