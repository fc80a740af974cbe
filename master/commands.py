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
                                     "2 bad arguments or config, 3 locked, 5 held: a check failed, "
                                     "70 unexpected error, 75 backend down)")
    m.add_argument("job")
    kit.add_params(m)
    m.set_defaults(func=master)

    rr = sub.add_parser("rerun", help="rerun finished nights from any stage, as new generations (exit 0 done, "
                                      "1 a rerun failed, 2 refused: a night never ran, has not finished, or what it "
                                      "reads did not complete, 3 locked, 5 held: a check failed)")
    rr.add_argument("job")
    rr.add_argument("--dates", help="YYYY-MM-DD, a range D1..D2, or a comma-separated list: one rerun each")
    kit.add_params(rr)
    rr.add_argument("--from-stage", required=True, help="the stage to rerun from (any stage; later phases follow)")
    rr.add_argument("--chunks", help="comma-separated chunk ids of that phase, the last phase only (default: all)")
    rr.add_argument("--force", action="store_true",
                    help="read a phase that did not complete in the run it is read from, as it is")
    rr.add_argument("--dry-run", action="store_true", help="show what would run and what each phase reads")
    rr.set_defaults(func=rerun)


def settings(cfg: Config, job: Job) -> Any:
    from master.coordinator import MasterSettings
    from swarm.slices import SplitSettings

    m = cfg["master"]
    return MasterSettings(poll=m["poll"], lost_after=m["lost_after"], deadline=m["deadline"] or None,
                          patience=m["patience"], window=m["window"], options=cfg.options(job.name),
                          split=SplitSettings.of(cfg["split"]))


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
    from master.rerun import dates_between, describe, param_sets, plan_rerun, run_rerun
    from swarm.alerts import command_alert

    job = kit.job(cfg, args.job)
    keys = kit.keys(cfg)
    broker, ledger, tables = kit.backends(cfg, serve=False, create_ledger=False)  # a rerun needs the runs it reruns
    chunks = args.chunks.split(",") if args.chunks else None
    nights = param_sets(job, kit.params(args), dates_between(args.dates) if args.dates else ())
    plans = [plan_rerun(job, p, args.from_stage, ledger, tables, chunks, cfg.options(job.name), force=args.force)
             for p in nights]
    print(describe(plans, job))
    if args.dry_run:
        return EXIT_OK
    codes = []
    with kit.workers_here(cfg, job, ledger, tables, keys):
        for plan, params in zip(plans, nights, strict=True):  # one at a time: reruns keep to a budget of one run
            run = run_rerun(plan, job, params, broker, ledger, tables, settings(cfg, job), keys=keys,
                            alert=command_alert(cfg["master"]["alert_command"]))
            codes.append(kit.finished(run))
    return max(codes, default=EXIT_OK) if EXIT_FAILED not in codes else EXIT_FAILED
