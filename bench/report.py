"""The bench's results: ratios and targets computed from one run's cases, a rich table, JSON files."""
from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.table import Table

# (name, what it is, how it compares, the bound)
TARGETS = (
    ("swarm_vs_raw_per_proc", "Swarm no-op per worker process / raw pika", ">=", 0.70),
    ("swarm_vs_celery", "Swarm no-op fleet / Celery", ">=", 3.0),
    ("overload_vs_peak", "throughput at 10x offered load / peak (publisher on the same cores)", ">=", 0.90),
    ("overload_backlog_vs_peak", "throughput on a 10x backlog queued ahead / peak", ">=", 0.90),
    ("overload_rss_growth", "worker RSS growth under 10x load (the larger of both)", "<", 0.20),
    ("overload_bounded_vs_peak", "throughput at 10x offered load, bounded stages / peak", ">=", 0.90),
    ("backpressure_vs_capacity", "a stage fed 10x faster than it drains, bounded: throughput / its capacity",
     ">=", 0.90),
    ("master_total_seconds", "master: plan + checkpoint + publish, s", "<", 60.0),
    ("master_resume_seconds", "master: restart after SIGKILL to watching, s", "<", 5.0),
)


def _get(results: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(results, Mapping) or key not in results:
            return None
        results = results[key]
    return results


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _larger(a: float | None, b: float | None) -> float | None:
    known = [v for v in (a, b) if v is not None]
    return max(known) if known else None


def fleet(results: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Swarm no-op run with the most worker processes."""
    runs = results.get("swarm") or {}
    return runs[max(runs, key=int)] if runs else None


def single(results: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Swarm no-op run with the fewest worker processes."""
    runs = results.get("swarm") or {}
    return runs[min(runs, key=int)] if runs else None


def ratios(results: Mapping[str, Any]) -> dict[str, float | None]:
    one, many = single(results), fleet(results)
    return {
        "swarm_vs_raw_per_proc": _ratio(_get(one or {}, "per_proc"), _get(results, "raw_pika", "per_proc")),
        "swarm_vs_celery": _ratio(_get(many or {}, "msgs_per_s"), _get(results, "celery", "msgs_per_s")),
        "swarm_vs_celery_per_proc": _ratio(_get(many or {}, "per_proc"), _get(results, "celery", "per_proc")),
        "overload_vs_peak": _get(results, "overload", "vs_peak"),
        "overload_backlog_vs_peak": _get(results, "overload_backlog", "vs_peak"),
        "overload_bounded_vs_peak": _get(results, "overload_bounded", "vs_peak"),
        "backpressure_vs_capacity": _get(results, "backpressure", "vs_capacity"),
        "overload_rss_growth": _larger(_get(results, "overload", "rss_growth"),
                                       _get(results, "overload_backlog", "rss_growth")),
        "master_total_seconds": _get(results, "master", "total_seconds"),
        "master_resume_seconds": _get(results, "master", "resume", "resume_seconds"),
        "nightly_vs_scan_fold": _get(results, "nightly", "vs_scan_fold"),
        "skew_split_speedup": _get(results, "skew", "speedup"),
    }


def targets(measured: Mapping[str, float | None]) -> dict[str, dict]:
    out = {}
    for name, what, op, bound in TARGETS:
        value = measured.get(name)
        met = None if value is None or math.isnan(value) else (value >= bound if op == ">=" else value < bound)
        out[name] = {"what": what, "target": f"{op} {bound:g}", "value": value, "met": met}
    return out


def finish(results: dict) -> dict:
    """Add the ratios and the targets (both measured within this run) to ``results``."""
    results["ratios"] = ratios(results)
    results["targets"] = targets(results["ratios"])
    return results


# the table ------------------------------------------------------------------


def _num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def _times(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def throughput_table(results: Mapping[str, Any]) -> Table:
    raw = _get(results, "raw_pika", "per_proc")
    celery = _get(results, "celery", "msgs_per_s")
    table = Table(title="Throughput (messages/s; each chunk is 2 messages: stage a, then b)")
    for column in ("case", "msgs/s", "per process", "vs raw pika", "vs Celery", "p50 ms", "p99 ms",
                   "peak RSS MiB", "notes"):
        table.add_column(column, justify="left" if column in ("case", "notes") else "right")

    def row(name: str, r: Mapping[str, Any] | None, notes: str = "") -> None:
        if r:
            table.add_row(name, _num(r.get("msgs_per_s")), _num(r.get("per_proc")),
                          _pct(_ratio(r.get("per_proc"), raw)), _times(_ratio(r.get("msgs_per_s"), celery)),
                          _num(_get(r, "latency_ms", "p50"), 1), _num(_get(r, "latency_ms", "p99"), 1),
                          _num(r.get("peak_rss_mib"), 1), notes)

    row("raw pika", results.get("raw_pika"), f"1 process, prefetch {_get(results, 'raw_pika', 'prefetch')}")
    row("raw pika, Swarm's prefetch", results.get("raw_pika_matched"),
        f"prefetch {_get(results, 'raw_pika_matched', 'prefetch')}")
    for procs, r in sorted((results.get("swarm") or {}).items(), key=lambda kv: int(kv[0])):
        row(f"Swarm noop, {procs} proc", r, "ledger on (MariaDB)")
    row("Celery chain", results.get("celery"),
        f"prefork, {_get(results, 'celery', 'procs')} children + parent (RSS summed)")
    nightly = results.get("nightly")
    if nightly:
        plain = _get(nightly, "scan_fold", "rows_per_s")
        versus = f" ({_times(nightly.get('vs_scan_fold'))} a plain scan-and-fold's {_num(plain)})" if plain else ""
        table.add_row("nightly merchant_daily", "-", "-", "-", "-", "-", "-", _num(nightly.get("peak_rss_mib"), 1),
                      f"{_num(nightly['rows_per_s'])} rows/s{versus}, {_num(nightly['chunks_per_s'], 1)} chunks/s, "
                      f"{nightly['procs']} procs, {_num(nightly['seconds'], 1)} s")
    return table


def targets_table(results: Mapping[str, Any]) -> Table:
    table = Table(title="Targets (ratios from this run)")
    for column in ("target", "bound", "measured", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for t in (results.get("targets") or {}).values():
        value = t["value"]
        shown = _num(value, 2)
        met = {True: "[green]yes", False: "[red]no", None: "-"}[t["met"]]
        table.add_row(t["what"], t["target"], shown, met)
    return table


def _cores(case: Mapping[str, Any]) -> str:
    return ", ".join(f"{name} {used:.2f}" for name, used in (case.get("cores") or {}).items())


def details(results: Mapping[str, Any]) -> list[str]:
    """One line each for the no-op runs' CPU, the two overload cases and the master."""
    lines = []
    for procs, r in sorted((results.get("swarm") or {}).items(), key=lambda kv: int(kv[0])):
        if r.get("cores"):
            lines.append(f"Swarm noop, {procs} proc: cores used: {_cores(r)}")
    o = results.get("overload")
    if o:
        rss = [m for _, m in o["rss_mib"]]
        settled = [m for t, m in o["rss_mib"] if t >= o.get("settle", 0)]
        lines.append(
            f"overload: offered {_num(o['offered_chunks_per_s'])} chunks/s (target {_num(o['target_chunks_per_s'])})"
            f" for {o['seconds']:.0f} s on {o['procs']} procs: {_num(o['msgs_per_s'])} msgs/s ="
            f" {_pct(o['vs_peak'])} of peak; workers' RSS summed {_num(rss[0] if rss else None, 1)} MiB at start,"
            f" {_num(settled[0] if settled else None, 1)} after {o.get('settle', 0):g} s, at most"
            f" {_num(max(settled, default=None), 1)} later (growth {_pct(o['rss_growth'])});"
            f" backlog left in RabbitMQ {_num(o['backlog_at_end'])}; cores used: {_cores(o)}")
    b = results.get("overload_backlog")
    if b:
        lines.append(
            f"overload, backlog queued ahead: {_num(b['queued_chunks'])} chunks queued, then {b['seconds']:.0f} s on"
            f" {b['procs']} procs: {_num(b['msgs_per_s'])} msgs/s = {_pct(b['vs_peak'])} of peak; RSS growth"
            f" {_pct(b['rss_growth'])}; cores used: {_cores(b)}")
    ob = results.get("overload_bounded")
    if ob:
        most = ", ".join(f"{q.rsplit('.', 1)[-1]} {_num(v)}" for q, v in (ob.get("most_ready") or {}).items())
        lines.append(
            f"overload, bounded stages (max_queue {_num(ob['max_queue'])}): offered"
            f" {_num(ob['offered_chunks_per_s'])} chunks/s for {ob['seconds']:.0f} s on {ob['procs']} procs:"
            f" {_num(ob['msgs_per_s'])} msgs/s = {_pct(ob['vs_peak'])} of peak; {_num(ob['refused_offers'])} offers"
            f" refused and made again; most ready seen: {most}; RSS growth {_pct(ob['rss_growth'])};"
            f" cores used: {_cores(ob)}")
    bp = results.get("backpressure")
    if bp:
        of_threads = _ratio(bp["consume_msgs_per_s"], bp["sleep_capacity"])
        lines.append(
            f"bounded stage fed {bp['slower']:g}x faster than it drains ({_num(bp['chunks'])} chunks,"
            f" {bp['procs']} procs): {_num(bp['consume_msgs_per_s'])} msgs/s = {_pct(bp['vs_capacity'])} of its"
            f" capacity, {_num(bp['consume_capacity'])} unbounded ({_pct(of_threads)}"
            f" of its threads' {_num(bp['sleep_capacity'])}); most ready seen {_num(bp['most_ready'])} vs its bound"
            f" {_num(bp['max_queue'])} (unbounded {_num(bp['unbounded_most_ready'])}; produce's"
            f" {_num(bp['most_ready_produce'])}), empty in {_pct(bp['empty_share'])} of samples; workers' RSS"
            f" {_num(bp['rss_start_mib'], 1)} MiB at start, {_num(bp['rss_end_mib'], 1)} at the end;"
            f" resource alarm: {'yes' if bp['alarm'] else 'no'}")
    n = results.get("nightly")
    if n and n.get("scan_fold"):
        runs = ", ".join(_num(r) for r in n["scan_fold"].get("runs_rows_per_s", []))
        lines.append(
            f"nightly merchant_daily on {n.get('store', 'HBase')}, {_num(n['events'])} events in"
            f" {n.get('regions', '?')} region(s), {n['procs']} worker procs: {_num(n['rows_per_s'])} rows/s end to end"
            f" (map, barrier, reduce), {_num(n.get('map_rows_per_s'))} in the map phase;"
            f" a plain happybase scan-and-fold of the same events in one process {_num(n['scan_fold']['rows_per_s'])}"
            f" rows/s (runs: {runs}); Swarm = {_times(n.get('vs_scan_fold'))} of it, summaries equal:"
            f" {'yes' if n.get('exact') else 'no'}")
    lines += _skew(results)
    lines += _security(results)
    m = results.get("master")
    if m:
        r = m["resume"]
        lines.append(
            f"master, {_num(m['chunks'])} chunks: start {m['start_seconds']:.1f} s, plan+checkpoint"
            f" {m['plan_seconds']:.1f} s, publish {m['publish_seconds']:.1f} s, total {m['total_seconds']:.1f} s;"
            f" SIGKILL at {_num(r['queued_at_kill'])} queued, resumed to watching in {r['resume_seconds']:.1f} s"
            f" ({_num(r['republished'])} re-published)")
    return lines


def worker_us_per_message(results: Mapping[str, Any]) -> float | None:
    """CPU the worker processes spent per message in the single-process no-op run, in microseconds."""
    one = single(results) or {}
    cores, rate = _get(one, "cores", "workers"), one.get("msgs_per_s")
    return cores / rate * 1e6 if cores and rate else None


def _skew(results: Mapping[str, Any]) -> list[str]:
    k = results.get("skew")
    if not k:
        return []
    off, on, split = k["off"], k["on"], k["split"]
    return [
        f"skewed day on {k.get('store', 'HBase')}, {_num(k['events'])} events, {_pct(k['hot'])} in one of"
        f" {k['chunks']} chunks, slices of {_num(k['slice_rows'])} rows, {k['procs']} worker procs: splitting off"
        f" {off['seconds']:.1f} s (map {off['map_seconds']:.1f} s), on {on['seconds']:.1f} s (map"
        f" {on['map_seconds']:.1f} s, {on['parts']} parts; ways {split['ways']}, tail {split['tail']}, min_rows"
        f" {_num(split['min_rows'])}): {_times(k['speedup'])} faster end to end, {_times(k['map_speedup'])} the map"
        f" phase; summaries exact: {'yes' if off['exact'] and on['exact'] else 'no'}",
    ]


def _security(results: Mapping[str, Any]) -> list[str]:
    sec = results.get("security")
    if not sec:
        return []
    s, c = sec["signing"], sec["children"]
    worker = worker_us_per_message(results)
    share = f" = {_pct(s['us_added'] / worker)} of a no-op message's worker CPU ({_num(worker)} us)" if worker else ""
    return [
        f"signing: encode + decode {s['us_signed']:.1f} us per message signed, {s['us_plain']:.1f} us unsigned:"
        f" +{s['us_added']:.1f} us{share}; {s['bytes_signed']} bytes vs {s['bytes_plain']}",
        f"children's ledger rows: grouped complete of {c['batch']} parents {c['ms_per_msg_with_child']:.3f} ms per"
        f" message with one child each, {c['ms_per_msg_without']:.3f} ms without: +{c['ms_per_child_row']:.3f} ms"
        " per child row (one transaction per batch)",
    ]


def show(results: Mapping[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    host = results.get("host", {})
    console.print(f"[bold]Swarm bench[/] {results.get('date', '')} on {host.get('cores', '?')} cores"
                  f" (RabbitMQ {host.get('rabbitmq', '?')}, MariaDB {host.get('mariadb', '?')},"
                  f" Python {host.get('python', '?')}), scale {results.get('scale', 1)}")
    console.print(throughput_table(results))
    for line in details(results):
        console.print(line)
    console.print(targets_table(results))


# files ----------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """NaN and infinities as null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write(results: Mapping[str, Any], directory: Path, now: datetime.datetime | None = None) -> list[Path]:
    """``latest.json`` and a dated copy in ``directory``; returns both paths."""
    now = now or datetime.datetime.now()
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(results), indent=2, allow_nan=False) + "\n"
    paths = [directory / "latest.json", directory / f"{now:%Y-%m-%dT%H%M%S}.json"]
    for path in paths:
        path.write_text(text)
    return paths
