"""The master's subcommands: ``swarm master`` (run or resume a job's run) and ``swarm rerun``."""
from __future__ import annotations

import argparse
from typing import Any

from swarm.commands import kit
from swarm.config import Config
from swarm.exits import EXIT_FAILED, EXIT_OK
from swarm.stage import Job


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    m = sub.add_parser("master", help="run or resume a job for its params (exit 0 done, 1 failed, "
                                     "2 bad arguments or config, 3 locked, 70 unexpected error, 75 backend down)")
    m.add_argument("job")
    kit.add_params(m)
    m.set_defaults(func=master)

    rr = sub.add_parser("rerun", help="rerun stages of finished runs from their intermediate tables (exit 0 done, "
                                      "1 a rerun failed, 2 a date never ran or has not finished, 3 locked)")
    rr.add_argument("job")
    rr.add_argument("--dates", required=True, help="YYYY-MM-DD, a range D1..D2, or a comma-separated list")
    rr.add_argument("--from-stage", required=True, help="first stage of the phase to rerun from")
    rr.add_argument("--chunks", help="comma-separated chunk ids of that phase (default: all)")
    rr.add_argument("--dry-run", action="store_true", help="show what would be rerun, change nothing")
    rr.set_defaults(func=rerun)


def settings(cfg: Config, job: Job) -> Any:
    from master.coordinator import MasterSettings

    m = cfg["master"]
    return MasterSettings(poll=m["poll"], lost_after=m["lost_after"], deadline=m["deadline"] or None,
                          patience=m["patience"], options=cfg.options(job.name))


def master(args: argparse.Namespace, cfg: Config) -> int:
    from master.coordinator import Master
    from swarm.alerts import command_alert
    from swarm.progress import ProgressReport

    job = kit.job(cfg, args.job)
    kit.shared_broker(cfg, "master", "workers")
    keys = kit.keys(cfg)
    broker, ledger, tables = kit.backends(cfg, serve=False)
    progress = ProgressReport()
    try:
        run = Master(job, kit.params(args), broker, ledger, tables, settings(cfg, job), progress,
                     alert=command_alert(cfg["master"]["alert_command"]), keys=keys,
                     on_locked=lambda: kit.serve_metrics(cfg, "master", job, next(iter(job.stages)), broker, ledger,
                                                         tables)).run()
    finally:
        progress.close()
    return kit.finished(run)


def rerun(args: argparse.Namespace, cfg: Config) -> int:
    from master.rerun import dates_between, describe, plan_rerun, run_rerun

    job = kit.job(cfg, args.job)
    keys = kit.keys(cfg)
    broker, ledger, tables = kit.backends(cfg, serve=False, create_ledger=False)  # a rerun needs the runs it reruns
    chunks = args.chunks.split(",") if args.chunks else None
    dates = dates_between(args.dates)
    plans = [plan_rerun(job, {"date": d}, args.from_stage, ledger, tables, chunks, cfg.options(job.name))
             for d in dates]
    print(describe(plans))
    if args.dry_run:
        return EXIT_OK
    failed = 0
    with kit.workers_here(cfg, job, ledger, tables, keys):
        for plan, date in zip(plans, dates, strict=True):  # one at a time: reruns keep to a budget of one run
            run = run_rerun(plan, job, {"date": date}, broker, ledger, tables, settings(cfg, job), keys=keys)
            failed += kit.finished(run) != EXIT_OK
    return EXIT_FAILED if failed else EXIT_OK
