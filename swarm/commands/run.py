"""``swarm run``: a job's master and worker threads in this one process, on the configured backends."""
from __future__ import annotations

import argparse

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import ConfigError


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    n = sub.add_parser("run", help="run a job for its params in this one process: master and worker threads "
                                    "(exit 0 done, 1 failed, 2 bad config)")
    n.add_argument("job")
    kit.add_params(n)
    n.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
    n.set_defaults(func=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    from swarm import dlq
    from swarm.alerts import command_alert
    from swarm.backends import open_broker
    from swarm.local import local_fleet, master_for
    from swarm.progress import ProgressReport
    from swarm.slices import SplitSettings

    job = kit.job(cfg, args.job)
    params, keys = kit.params(args), kit.keys(cfg)
    if args.workers < 1:
        raise ConfigError("--workers must be 1 or more")
    url, in_process = cfg["backends"]["broker"], kit.in_process(cfg)
    broker, ledger, tables = kit.backends(cfg, serve=False)  # the master's; the worker threads open their own
    m, split = cfg["master"], SplitSettings.of(cfg["split"])
    progress = ProgressReport()
    try:
        with local_fleet(job, lambda: open_broker(url), ledger, tables, args.workers,
                         lease=cfg["worker"]["lease"], options=cfg.options(job.name), keys=keys, split=split):
            the_run = master_for(job, params, broker, ledger, tables, cfg.options(job.name),
                                 poll=min(m["poll"], 0.2), progress=progress, alert=command_alert(m["alert_command"]),
                                 keys=keys, lost_after=m["lost_after"], deadline=m["deadline"] or None,
                                 fresh_broker=in_process, patience=m["patience"], split=split).run()
    finally:
        progress.close()
    if in_process:
        dlq.collect(broker, ledger, job)  # the queues go with this process: their dead letters stay in the ledger
    return kit.finished(the_run)
