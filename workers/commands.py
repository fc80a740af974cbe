"""The worker's subcommands: ``swarm worker`` (serve a job's stages) and ``swarm demo``."""
from __future__ import annotations

import argparse
import logging

from swarm.commands import kit
from swarm.config import Config
from swarm.exits import EXIT_OK

log = logging.getLogger("swarm")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    w = sub.add_parser("worker", help="serve a job's stages until SIGTERM, then drain")
    w.add_argument("--job", help="job to serve (default: worker.job)")
    w.add_argument("--stages", help="comma-separated stages (default: worker.stages, else all)")
    w.set_defaults(func=worker)

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
    d.set_defaults(func=demo)


def worker(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.slices import SplitSettings
    from workers.worker import Worker

    job = kit.job(cfg, args.job)
    stages = args.stages.split(",") if args.stages else cfg["worker"]["stages"]
    kit.shared_broker(cfg, "worker", "master")
    keys = kit.keys(cfg)
    broker, ledger, tables = kit.backends(cfg, serve=True)
    stop = kit.until_signalled()
    serving = Worker(job, broker, ledger, tables, stages, lease=cfg["worker"]["lease"],
                     options=cfg.options(job.name), keys=keys, config=cfg,
                     split=SplitSettings.of(cfg["split"]))
    kit.serve_metrics(cfg, "worker", job, serving.stages[0].name, broker, ledger, tables)
    log.info("worker serving %s stages %s", job.name, [s.name for s in serving.stages])
    serving.run(stop)
    return EXIT_OK


def demo(args: argparse.Namespace, cfg: Config) -> int:
    from workers.demo import run_demo

    return run_demo(args)
