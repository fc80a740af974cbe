"""The ``swarm`` command."""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Sequence

from swarm import config as config_mod
from master.rerun import RerunLocked, RerunRefused
from swarm.errors import (
    BackendError, BackendRefused, ConfigError, LedgerNotFound, MasterLocked, PluginError, SwarmError, TableError,
)

# One meaning each: scripts (deploy/swarm-nightly) act on them.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3  # done; the run failed; bad arguments or config; locked
EXIT_SOFTWARE = 70  # an unexpected error, a bug in a job or in Swarm (sysexits' EX_SOFTWARE); not a failed run
EXIT_UNAVAILABLE = 75  # a backend stayed unreachable (sysexits' EX_TEMPFAIL): try again later
log = logging.getLogger("swarm")


# pika logs each failed connection attempt as seven ERROR lines; the broker
# reports the failure itself, once, with the URL's password hidden.
_PIKA_CONNECT_LOGGERS = (
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
    "pika.adapters.base_connection",
)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO-8601 with the zone), ``level``, ``logger``, ``message``, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or (``fmt`` "json") one JSON object a line."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    logging.getLogger("pika").setLevel(logging.WARNING)
    for name in _PIKA_CONNECT_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "hbase-dev":
        args.args = extra  # the dev server parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        cfg = config_mod.load(args.config)
        setup_logging(str(cfg["log"]["level"]), cfg["log"]["format"])
        return args.func(args, cfg)
    except SwarmError as exc:
        code, prefix = _exit_for(exc)
        print(f"swarm: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug; Python's own exit 1 would read as "the run failed"
        traceback.print_exc()
        print(f"swarm: unexpected error (traceback above); exit {EXIT_SOFTWARE}", file=sys.stderr)
        return EXIT_SOFTWARE


def _exit_for(exc: SwarmError) -> tuple[int, str]:
    """The exit code of an error, and what to say before its message."""
    if isinstance(exc, RerunRefused):
        return (EXIT_LOCKED if isinstance(exc, RerunLocked) else EXIT_USAGE), "rerun refused: "
    if isinstance(exc, MasterLocked):
        return EXIT_LOCKED, ""
    if isinstance(exc, (ConfigError, PluginError, TableError, BackendRefused)):
        return EXIT_USAGE, ""
    if isinstance(exc, BackendError):
        return EXIT_UNAVAILABLE, ""
    return EXIT_SOFTWARE, ""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm", description="Staged, checkpointing batch work over HBase.")
    p.add_argument("--config", help="TOML config file (default: swarm.toml if present)")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the nightly example job end to end on one machine")
    d.add_argument("--events", type=int, default=60_000, help="raw events to generate (default 60000)")
    d.add_argument("--merchants", type=int, default=50)
    d.add_argument("--workers", type=int, default=2, help="worker threads (memory://) or processes")
    d.add_argument("--chunks", type=int, default=32, help="map chunks per day")
    d.add_argument("--date", help="the day to generate and process (default: yesterday)")
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--data", help="directory for the embedded ledger and tables (default: a new temp dir)")
    d.add_argument("--broker", help="broker URL (default memory://)")
    d.add_argument("--ledger", help="ledger URL (default sqlite in --data)")
    d.add_argument("--tables", help="tables URL (default embedded in --data)")
    d.set_defaults(func=_demo)

    m = sub.add_parser("master", help="run or resume a job for its params (exit 0 done, 1 failed, "
                                     "2 bad arguments or config, 3 locked, 70 unexpected error, 75 backend down)")
    m.add_argument("job")
    m.add_argument("--date", help="the date param (shorthand for --param date=...)")
    m.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    m.set_defaults(func=_master)

    n = sub.add_parser("run", help="run a job for its params in this one process: master and worker threads "
                                    "(exit 0 done, 1 failed, 2 bad config)")
    n.add_argument("job")
    n.add_argument("--date", help="the date param (shorthand for --param date=...)")
    n.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    n.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
    n.set_defaults(func=_run)

    w = sub.add_parser("worker", help="serve a job's stages until SIGTERM, then drain")
    w.add_argument("--job", help="job to serve (default: worker.job)")
    w.add_argument("--stages", help="comma-separated stages (default: worker.stages, else all)")
    w.set_defaults(func=_worker)

    rr = sub.add_parser("rerun", help="rerun stages of finished runs from their intermediate tables (exit 0 done, "
                                      "1 a rerun failed, 2 a date never ran or has not finished, 3 locked)")
    rr.add_argument("job")
    rr.add_argument("--dates", required=True, help="YYYY-MM-DD, a range D1..D2, or a comma-separated list")
    rr.add_argument("--from-stage", required=True, help="first stage of the phase to rerun from")
    rr.add_argument("--chunks", help="comma-separated chunk ids of that phase (default: all)")
    rr.add_argument("--dry-run", action="store_true", help="show what would be rerun, change nothing")
    rr.set_defaults(func=_rerun)

    r = sub.add_parser("runs", help="run history, newest first; `runs cancel RUN --reason R` ends a run")
    r.add_argument("action", nargs="?", choices=["cancel"], help="cancel: end RUN (its workers drop its messages)")
    r.add_argument("run", nargs="?", help="cancel: the run's id")
    r.add_argument("--reason", default="", help="cancel: why, kept in the run's history")
    r.add_argument("--force", action="store_true", help="cancel even while a master holds the run; it stops")
    r.add_argument("--job")
    r.add_argument("--status", choices=["running", "done", "failed", "cancelled"])
    r.add_argument("--since", help="YYYY-MM-DD (created on or after)")
    r.add_argument("--until", help="YYYY-MM-DD (created before)")
    r.add_argument("--text", help="text in the error")
    r.add_argument("--limit", type=int, default=50)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_runs)

    s = sub.add_parser("status", help="one run: phases, messages by state, failures")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true", help="redraw in place until the run finishes, or Ctrl-C")
    s.add_argument("--interval", type=float, default=2.0, help="--watch: seconds between redraws (default 2)")
    s.add_argument("--refreshes", type=int, metavar="N", help="--watch: stop after N views even if the run goes on")
    s.set_defaults(func=_status)

    q = sub.add_parser("dlq", help="dead letters: list, show, replay")
    q.add_argument("action", choices=["list", "show", "replay"])
    q.add_argument("ids", nargs="*", type=int, help="dead-letter ids (show/replay)")
    q.add_argument("--job", help="collect dead letters from this job's queues first")
    q.add_argument("--all", action="store_true", help="replay every listed dead letter")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_dlq)

    t = sub.add_parser("tables", help="the table store: list, create a job's tables, load, scan, count, drop")
    t.add_argument("action", choices=["list", "create", "load", "scan", "count", "drop"])
    t.add_argument("target", nargs="?", help="create: the JOB whose declared tables to make; load, scan, count, "
                                             "drop: the TABLE")
    t.add_argument("file", nargs="?", help="load: a JSON Lines (.jsonl) or CSV (.csv) file")
    t.add_argument("--format", choices=["jsonl", "csv"], help="load: the file's format (default: from its name)")
    t.add_argument("--key", default="row", help="load: the field that holds the row key (default: row)")
    t.add_argument("--family", help="load: the column family of fields not named family:qualifier")
    t.add_argument("--batch", type=int, default=1000, help="load: rows per write (default 1000)")
    t.add_argument("--prefix", help="scan, count: rows whose key starts with this")
    t.add_argument("--start", default="", help="scan, count: first key (inclusive)")
    t.add_argument("--stop", default="", help="scan, count: last key (exclusive)")
    t.add_argument("--columns", help="scan: comma-separated family:qualifier or family: columns")
    t.add_argument("--limit", type=int, default=20, help="scan: at most this many rows (default 20; 0: all)")
    t.add_argument("--json", action="store_true", help="scan: JSON Lines")
    t.add_argument("--yes", action="store_true", help="drop: really delete the table and every row in it")
    t.set_defaults(func=_tables)

    b = sub.add_parser("db", help="ledger schema, and pruning old runs")
    b.add_argument("action", choices=["init", "migrate", "prune"])
    b.add_argument("--older-than", metavar="DAYS", type=float,
                   help="prune: delete the runs that finished more than DAYS days ago, with all their rows")
    b.add_argument("--dry-run", action="store_true", help="prune: say what would be deleted, delete nothing")
    b.set_defaults(func=_db)

    y = sub.add_parser("deploy", help="render deployment files from the config")
    y.add_argument("what", choices=["supervisord"], help="supervisord: the worker fleet's supervisord config")
    y.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (as before the command)")
    y.add_argument("--out", help="write here, mode 0600 (default: print with passwords hidden)")
    y.add_argument("--processes", type=int,
                   help="worker processes (default: worker.processes; autoscale.max with --autoscale)")
    y.add_argument("--autoscale", action="store_true",
                   help="add a `swarm autoscale` program; it starts and drains the workers")
    y.add_argument("--log-dir", default="/var/log/swarm")
    y.add_argument("--run-dir", default="/run/swarm", help="for supervisord's pid file")
    y.add_argument("--user", help="run the programs as this user (supervisord running as root)")
    y.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra environment variable for the programs (e.g. PYTHONPATH)")
    y.set_defaults(func=_deploy)

    a = sub.add_parser("autoscale", help="start and drain worker processes under supervisord by queue depth")
    a.add_argument("--job", help="job whose queues to watch (default: worker.job)")
    a.add_argument("--once", action="store_true", help="look once, act, print the decision and exit")
    a.add_argument("--dry-run", action="store_true", help="say what it would start or drain, change nothing")
    a.set_defaults(func=_autoscale)

    j = sub.add_parser("new-job", help="write a working job to start from: module, tests, sample data, config")
    j.add_argument("name", help="the job's name, also its module's: lower case letters, digits and _")
    j.add_argument("--dir", default=".", help="where to write it (default: here)")
    j.set_defaults(func=_new_job)

    c = sub.add_parser("config", help="check the config: each setting and where it came from, then each backend "
                                      "(exit 0 all well, 2 a config problem, 75 a backend unreachable)")
    c.add_argument("action", choices=["check"])
    c.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file (as before the command)")
    c.add_argument("--timeout", type=float, default=10.0, help="seconds each backend has to answer (default 10)")
    c.set_defaults(func=_config)

    h = sub.add_parser("hbase-dev", add_help=False,
                       help="the HBase Thrift development server (a test stand-in, not a store); --help for options")
    h.set_defaults(func=_hbase_dev)
    return p


# commands --------------------------------------------------------------------------


def _demo(args, cfg) -> int:
    from swarm.demo import run_demo

    return run_demo(args)


def _backends(cfg, *, serve: bool, create_ledger: bool = True):
    """The broker (``serve``: a worker's, else one that never consumes), the ledger and the tables."""
    from swarm.backends import open_broker, open_tables

    urls = cfg["backends"]
    ledger = _ledger(cfg, create=create_ledger)
    return open_broker(urls["broker"], serve=serve), ledger, open_tables(urls["tables"])


def _job(cfg, name: str | None):
    from swarm.plugins import load_job

    name = name or cfg["worker"]["job"]
    if not name:
        raise ConfigError("worker.job: no job given (use --job or set worker.job / SWARM_WORKER_JOB)")
    return load_job(name, cfg["jobs"]["modules"], cfg.job_path())


def _params(args) -> dict[str, str]:
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        params[key] = value
    if args.date:
        params["date"] = args.date
    return params


IN_PROCESS = ("backends.broker is {url}: an in-process broker lives and dies with one process, so a separate "
              "`swarm {command}` would never meet its {other}. Run the job in one process with "
              "`swarm run JOB --date D`, or set a shared broker (amqp://...)")


def _shared_broker(cfg, command: str, other: str) -> None:
    url = cfg["backends"]["broker"]
    if url.startswith("memory:"):
        raise ConfigError(IN_PROCESS.format(url=url, command=command, other=other))


def _master(args, cfg) -> int:
    from master.coordinator import Master
    from swarm.alerts import command_alert
    from swarm.progress import ProgressReport

    job = _job(cfg, args.job)
    _shared_broker(cfg, "master", "workers")
    keys = _keys(cfg)  # a missing key stops the command before anything connects
    broker, ledger, tables = _backends(cfg, serve=False)
    progress = ProgressReport()
    try:
        run = Master(job, _params(args), broker, ledger, tables, _master_settings(cfg, job), progress,
                     alert=command_alert(cfg["master"]["alert_command"]), keys=keys,
                     on_locked=lambda: _serve_metrics(cfg, "master", job, next(iter(job.stages)), broker, ledger,
                                                      tables)).run()
    finally:
        progress.close()
    print(f"{run.id}: {run.status}" + (f": {run.error}" if run.error else ""))
    return EXIT_OK if run.status == "done" else EXIT_FAILED


def _run(args, cfg) -> int:
    """The job's master and ``--workers`` worker threads in this process, on the configured backends."""
    from swarm import dlq
    from swarm.alerts import command_alert
    from swarm.backends import open_broker
    from swarm.local import local_fleet, master_for
    from swarm.progress import ProgressReport

    job = _job(cfg, args.job)
    params, keys = _params(args), _keys(cfg)
    if args.workers < 1:
        raise ConfigError("--workers must be 1 or more")
    url = cfg["backends"]["broker"]
    in_process = url.startswith("memory:")
    broker, ledger, tables = _backends(cfg, serve=False)  # the master's; the worker threads open their own
    m = cfg["master"]
    progress = ProgressReport()
    try:
        with local_fleet(job, lambda: open_broker(url), ledger, tables, args.workers,
                         lease=cfg["worker"]["lease"], options=cfg.options(job.name), keys=keys):
            run = master_for(job, params, broker, ledger, tables, cfg.options(job.name), poll=min(m["poll"], 0.2),
                             progress=progress, alert=command_alert(m["alert_command"]), keys=keys,
                             lost_after=m["lost_after"], deadline=m["deadline"] or None,
                             fresh_broker=in_process, patience=m["patience"]).run()
    finally:
        progress.close()
    if in_process:
        dlq.collect(broker, ledger, job)  # the queues go with this process: their dead letters stay in the ledger
    print(f"{run.id}: {run.status}" + (f": {run.error}" if run.error else ""))
    return EXIT_OK if run.status == "done" else EXIT_FAILED


def _keys(cfg):
    from swarm.signing import for_site

    return for_site(cfg["security"], cfg["backends"]["broker"])


def _master_settings(cfg, job):
    from master.coordinator import MasterSettings

    m = cfg["master"]
    return MasterSettings(poll=m["poll"], lost_after=m["lost_after"], deadline=m["deadline"] or None,
                          patience=m["patience"], options=cfg.options(job.name))


def _rerun(args, cfg) -> int:
    from master.rerun import dates_between, describe, plan_rerun, run_rerun

    job = _job(cfg, args.job)
    keys = _keys(cfg)
    broker, ledger, tables = _backends(cfg, serve=False, create_ledger=False)  # a rerun needs the runs it reruns
    chunks = args.chunks.split(",") if args.chunks else None
    dates = dates_between(args.dates)
    plans = [plan_rerun(job, {"date": d}, args.from_stage, ledger, tables, chunks, cfg.options(job.name))
             for d in dates]
    print(describe(plans))
    if args.dry_run:
        return EXIT_OK
    failed = 0
    with _workers_here(cfg, job, ledger, tables, keys):
        for plan, date in zip(plans, dates):  # one at a time: reruns keep to a budget of one run
            run = run_rerun(plan, job, {"date": date}, broker, ledger, tables, _master_settings(cfg, job),
                            keys=keys)
            print(f"{run.id}: {run.status}" + (f": {run.error}" if run.error else ""))
            failed += run.status != "done"
    return EXIT_FAILED if failed else EXIT_OK


def _workers_here(cfg, job, ledger, tables, keys, workers: int = 2):
    """Worker threads in this process when the broker is in-process (nothing else could serve it); else none."""
    import contextlib

    from swarm.backends import open_broker
    from swarm.local import local_fleet

    url = cfg["backends"]["broker"]
    if not url.startswith("memory:"):
        return contextlib.nullcontext()
    return local_fleet(job, lambda: open_broker(url), ledger, tables, workers, lease=cfg["worker"]["lease"],
                       options=cfg.options(job.name), keys=keys)


def _serve_metrics(cfg, section: str, job, stage: str, broker, ledger, tables) -> int | None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``<section>.metrics_port`` (0: not served); the port."""
    from swarm.broker import stage_queue
    from swarm.metrics import ReadinessCheck, backend_probes, serve_metrics, url_passwords

    settings = cfg[section]
    if not settings["metrics_port"]:
        return None
    urls = [cfg["backends"][key] for key in ("broker", "ledger", "tables")]
    ready = ReadinessCheck(backend_probes(broker, ledger, tables, stage_queue(job.name, stage)),
                           secrets=url_passwords(urls))
    try:
        return serve_metrics(settings["metrics_port"], settings["metrics_bind"], ready=ready)
    except OSError as exc:  # the night's run matters more than its metrics
        log.error("cannot serve metrics on %s:%d (%s.metrics_bind, metrics_port): %s; going on without them",
                  settings["metrics_bind"], settings["metrics_port"], section, exc.strerror or exc)
        return None


def _worker(args, cfg) -> int:
    from workers.worker import Worker

    job = _job(cfg, args.job)
    stages = args.stages.split(",") if args.stages else cfg["worker"]["stages"]
    _shared_broker(cfg, "worker", "master")
    keys = _keys(cfg)
    broker, ledger, tables = _backends(cfg, serve=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = Worker(job, broker, ledger, tables, stages, lease=cfg["worker"]["lease"], options=cfg.options(job.name),
                    keys=keys)
    _serve_metrics(cfg, "worker", job, worker.stages[0].name, broker, ledger, tables)
    log.info("worker serving %s stages %s", job.name, [s.name for s in worker.stages])
    worker.run(stop)
    return EXIT_OK


def _ledger(cfg, create: bool = False):
    """The ledger; ``create`` only for commands that start work or set up the schema.

    To any other command a missing ledger means a wrong config, which an
    empty new ledger would hide.
    """
    from swarm.backends import open_ledger, redact

    url = cfg["backends"]["ledger"]
    try:
        return open_ledger(url, create=create)
    except LedgerNotFound as exc:
        raise LedgerNotFound(f"{exc}; backends.ledger is {redact(url)}, {cfg.origin('backends.ledger')}. "
                             f"`swarm db init` creates a ledger") from None


def _day(text: str | None) -> float | None:
    if not text:
        return None
    return time.mktime(time.strptime(text, "%Y-%m-%d"))


def _runs(args, cfg) -> int:
    from swarm.report import print_runs

    if args.action == "cancel":
        return _cancel(args, cfg)

    runs = _ledger(cfg).runs(args.job, args.status, _day(args.since), _day(args.until), args.text, args.limit)
    print_runs(runs, as_json=args.json)
    return EXIT_OK


def _cancel(args, cfg) -> int:
    from swarm.housekeeping import cancel

    if not args.run:
        raise ConfigError("runs cancel: give the RUN to cancel")
    run = cancel(_ledger(cfg), args.run, args.reason, force=args.force)
    print(f"{run.id}: {run.status}: {run.error}")
    return EXIT_OK


def _status(args, cfg) -> int:
    from swarm.report import print_status, status_dict, watch_status

    _check_watch(args)
    ledger = _ledger(cfg)
    run = ledger.get_run(args.run)
    if run is None:
        raise ConfigError(f"no run {args.run!r}; `swarm runs` lists them")
    stages = _stage_reader(cfg, run, ledger)
    try:
        if not args.watch:
            print_status(run, ledger, as_json=args.json, stages=stages(run))
            return EXIT_OK

        def load():
            now = ledger.get_run(args.run) or run  # pruned meanwhile: the last view stays
            return now, status_dict(now, ledger, stages(now))

        watch_status(load, args.interval, refreshes=args.refreshes)
    finally:
        stages.close()
    return EXIT_OK


def _check_watch(args) -> None:
    if not args.watch:
        if args.refreshes is not None:
            raise ConfigError("status: --refreshes goes with --watch")
        return
    if args.json:
        raise ConfigError("status: --watch redraws a view for a terminal; --json prints one snapshot: use one")
    if args.interval <= 0:
        raise ConfigError("status: --interval must be more than 0 seconds")
    if args.refreshes is not None and args.refreshes < 1:
        raise ConfigError("status: --refreshes must be 1 or more")


class _StageReader:
    """Each stage's queue depth and rate for a run, over one broker connection; nothing for a job not loaded."""

    def __init__(self, ledger, queues: dict[str, str] | None, broker):
        self.ledger, self.queues, self.broker = ledger, queues, broker

    def __call__(self, run) -> dict | None:
        from swarm.report import stage_dict

        return None if self.queues is None else stage_dict(run, self.ledger, self.queues, self.broker.depth)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


def _stage_reader(cfg, run, ledger) -> _StageReader:
    from swarm.backends import open_broker
    from swarm.broker import stage_queue

    try:
        job = _job(cfg, run.job)
    except PluginError:
        return _StageReader(ledger, None, None)  # a job this host no longer has: show what the ledger knows
    queues = {s: stage_queue(job.name, s) for s in job.stages}
    return _StageReader(ledger, queues, open_broker(cfg["backends"]["broker"], serve=False))


def _dlq(args, cfg) -> int:
    from swarm import dlq

    broker, ledger, code = None, _ledger(cfg), EXIT_OK
    if args.job or args.action in ("list", "replay"):
        from swarm.backends import open_broker

        broker = open_broker(cfg["backends"]["broker"], serve=False)
    if args.job:
        dlq.collect(broker, ledger, _job(cfg, args.job))
    elif args.action == "list":
        code = _collect_every_job(cfg, broker, ledger)
    if args.action == "list":
        dlq.print_list(ledger.dead_letters(), as_json=args.json)
        return code
    elif args.action == "show":
        for dl_id in args.ids:
            dlq.print_one(ledger, dl_id, as_json=args.json)
    else:
        ids = [d.id for d in ledger.dead_letters()] if args.all else args.ids
        if not ids:
            raise ConfigError("dlq replay: give dead-letter ids or --all")
        replayed = dlq.replay(broker, ledger, ids)
        print(f"replayed {replayed} dead letter(s)")
        if not broker.outlives_process:
            print("the in-process broker keeps nothing between commands: `swarm run JOB --date D` sends them")
    return EXIT_OK


def _collect_every_job(cfg, broker, ledger) -> int:
    """Gather the dead letters of every job the ledger has runs of, before listing them.

    A job this host cannot load is skipped with a warning; a broker that
    cannot be read leaves the listing to what the ledger has, and exit 75.
    """
    from swarm import dlq

    if not broker.outlives_process:
        return EXIT_OK  # the in-process broker's queues went with the process that ran the job: nothing to gather
    for name in ledger.jobs():
        try:
            job = _job(cfg, name)
        except PluginError as exc:
            print(f"swarm: warning: not gathering the dead letters of job {name!r}: cannot load it ({exc})",
                  file=sys.stderr)
            continue
        try:
            dlq.collect(broker, ledger, job)
        except BackendError as exc:
            print(f"swarm: warning: cannot gather dead letters ({exc}); listing those the ledger has",
                  file=sys.stderr)
            return EXIT_UNAVAILABLE
    return EXIT_OK


def _db(args, cfg) -> int:
    if args.action == "prune":
        return _prune(args, cfg)
    if args.older_than is not None or args.dry_run:
        raise ConfigError(f"db {args.action}: --older-than and --dry-run go with `db prune`")
    ledger = _ledger(cfg, create=True)
    applied = ledger.migrate()
    print(f"ledger schema {args.action}: " + (f"applied step(s) {applied}" if applied else "up to date"))
    return EXIT_OK


def _tables(args, cfg) -> int:
    from pathlib import Path

    from swarm import tabletools
    from swarm.backends import open_tables

    if args.action != "list" and not args.target:
        what = "JOB" if args.action == "create" else "TABLE"
        raise ConfigError(f"tables {args.action}: give the {what}")
    tables = open_tables(cfg["backends"]["tables"])
    try:
        if args.action == "list":
            print("\n".join(tables.tables()) or "(no tables)")
        elif args.action == "create":
            for name, made in tabletools.create(tables, _job(cfg, args.target)):
                print(f"{name}: {'created' if made else 'exists'}")
        elif args.action == "load":
            if not args.file:
                raise ConfigError("tables load: give the TABLE and the FILE to load")
            n = tabletools.load(tables, args.target, Path(args.file), args.format, args.key, args.family,
                                max(1, args.batch), progress=sys.stderr.isatty())
            print(f"loaded {n:,} row(s) into {args.target}")
        elif args.action in ("scan", "count"):
            _scan(tables, args)
        else:
            _drop(tables, args)
    finally:
        tables.close()
    return EXIT_OK


def _scan(tables, args) -> None:
    from swarm import tabletools

    if args.action == "count":
        print(tabletools.count(tables, args.target, args.prefix, args.start, args.stop))
        return
    columns = [c for c in (args.columns or "").split(",") if c]
    for row in tabletools.scan(tables, args.target, args.prefix, args.start, args.stop, columns, args.limit or None):
        print(tabletools.show(row, as_json=args.json))


def _drop(tables, args) -> None:
    if args.target not in tables.tables():
        raise ConfigError(f"tables drop: no table {args.target!r}")
    if not args.yes:
        raise ConfigError(f"tables drop {args.target}: this deletes the table and every row; add --yes to do it")
    tables.drop_table(args.target)
    print(f"dropped {args.target}")


def _prune(args, cfg) -> int:
    if args.older_than is None or args.older_than < 0:
        raise ConfigError("db prune: --older-than DAYS is required (a number of days, 0 or more)")
    pruned = _ledger(cfg).prune(time.time() - args.older_than * 86400, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(pruned.runs)} run(s) that finished over {args.older_than:g} day(s) ago "
          f"({pruned.messages:,} message rows) and {pruned.dead_letters} old dead letter(s)")
    for run_id in pruned.runs:
        print(f"  {run_id}")
    return EXIT_OK


def _deploy(args, cfg) -> int:
    from pathlib import Path

    from swarm import deploy

    extra = dict(_pairs(args.env, "--env"))
    processes = args.processes or (cfg["autoscale"]["max"] if args.autoscale else cfg["worker"]["processes"])
    layout = deploy.Layout(processes=processes, log_dir=args.log_dir, run_dir=args.run_dir, user=args.user,
                           autoscale=args.autoscale, extra_env=extra, secrets=bool(args.out),
                           control_password=deploy.previous_password(Path(args.out)) if args.out else None)
    text = deploy.render(cfg, layout)
    if not args.out:
        print(text, end="")
        print("swarm: passwords are shown as ***; --out FILE writes the usable file (mode 0600)", file=sys.stderr)
        return EXIT_OK
    deploy.write_private(Path(args.out), text, owner=args.user)
    owner = f", owned by {args.user}" if args.user and os.geteuid() == 0 else ""
    print(f"wrote {args.out} (mode 0600{owner}: it holds the backend and supervisord passwords)")
    return EXIT_OK


def _pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        pairs.append((key, value))
    return pairs


def _autoscale(args, cfg) -> int:
    from swarm.autoscale import Autoscaler, Policy, Supervisor
    from swarm.backends import open_broker
    from swarm.broker import stage_queue

    job = _job(cfg, args.job)
    settings = cfg["autoscale"]
    stages = cfg["worker"]["stages"] or list(job.stages)
    broker = open_broker(cfg["backends"]["broker"], serve=False)
    scaler = Autoscaler(broker, [stage_queue(job.name, s) for s in stages],
                        Supervisor(settings["supervisor_url"], settings["group"]), Policy.from_config(settings),
                        settings["interval"], dry_run=args.dry_run)
    if args.once:
        decision = scaler.tick()
        changed = decision.target != decision.running
        note = " (dry run: nothing started or drained)" if args.dry_run and changed else ""
        print(f"{settings['group']}: {decision.describe()}{note}")
        return EXIT_OK
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("autoscaling %s for %s between %d and %d workers", settings["group"], job.name,
             settings["min"], settings["max"])
    scaler.run(stop)
    return EXIT_OK


def _new_job(args, cfg) -> int:
    from pathlib import Path

    from swarm.scaffold import SAMPLE_DATE, new_job

    for path in new_job(args.name, Path(args.dir)):
        print(f"wrote {path}")
    n = args.name
    print(f"next: swarm tables create {n} && swarm tables load {n}_events {n}_sample.jsonl && "
          f"pytest test_{n}.py && swarm run {n} --date {SAMPLE_DATE}")
    return EXIT_OK


def _config(args, cfg) -> int:
    """``config check``: the settings, then one line per backend; the exit code of the worst finding."""
    from swarm import check

    if args.timeout <= 0:
        raise ConfigError("config check: --timeout must be more than 0 seconds")
    print(f"config: {check.config_source(cfg)}")
    rows = [("setting", "value", "from"), *check.settings(cfg)]
    key_width, value_width = (min(60, max(len(row[i]) for row in rows)) for i in (0, 1))
    for key, value, source in rows:
        print(f"  {key:<{key_width}}  {value:<{value_width}}  {source}")
    findings = check.run_checks(cfg, args.timeout)
    print()
    for finding in findings:
        print(f"{finding.role:<9} {finding.status:<12} {finding.text}")
    worst = check.exit_status(findings)
    code = {check.OK: EXIT_OK, check.PROBLEM: EXIT_USAGE, check.UNREACHABLE: EXIT_UNAVAILABLE}[worst]
    print({check.OK: "all well", check.PROBLEM: f"a config problem (exit {code})",
           check.UNREACHABLE: f"a backend did not answer (exit {code})"}[worst])
    return code


def _hbase_dev(args, cfg) -> int:
    from swarm.hbase_dev import main as hbase_dev_main

    return hbase_dev_main(args.args) or EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
