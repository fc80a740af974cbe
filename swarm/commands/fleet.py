"""``swarm deploy`` and ``swarm autoscale``: the worker fleet under supervisord."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from swarm.commands import kit
from swarm.config import Config
from swarm.exits import EXIT_OK

log = logging.getLogger("swarm")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
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
    y.set_defaults(func=deploy)

    a = sub.add_parser("autoscale", help="start and drain worker processes under supervisord by queue depth")
    a.add_argument("--job", help="job whose queues to watch (default: worker.job)")
    a.add_argument("--once", action="store_true", help="look once, act, print the decision and exit")
    a.add_argument("--dry-run", action="store_true", help="say what it would start or drain, change nothing")
    a.set_defaults(func=autoscale)


def deploy(args: argparse.Namespace, cfg: Config) -> int:
    from pathlib import Path

    from swarm import deploy as render

    processes = args.processes or (cfg["autoscale"]["max"] if args.autoscale else cfg["worker"]["processes"])
    layout = render.Layout(processes=processes, log_dir=args.log_dir, run_dir=args.run_dir, user=args.user,
                           autoscale=args.autoscale, extra_env=dict(kit.pairs(args.env, "--env")),
                           secrets=bool(args.out),
                           control_password=render.previous_password(Path(args.out)) if args.out else None)
    text = render.render(cfg, layout)
    if not args.out:
        print(text, end="")
        print("swarm: passwords are shown as ***; --out FILE writes the usable file (mode 0600)", file=sys.stderr)
        return EXIT_OK
    render.write_private(Path(args.out), text, owner=args.user)
    owner = f", owned by {args.user}" if args.user and os.geteuid() == 0 else ""
    print(f"wrote {args.out} (mode 0600{owner}: it holds the backend and supervisord passwords)")
    return EXIT_OK


def autoscale(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.autoscale import Autoscaler, Policy, Supervisor
    from swarm.broker import queue_bounds, stage_queue

    job = kit.job(cfg, args.job)
    settings = cfg["autoscale"]
    stages = cfg["worker"]["stages"] or list(job.stages)
    scaler = Autoscaler(kit.broker(cfg), [stage_queue(job.name, s) for s in stages],
                        Supervisor(settings["supervisor_url"], settings["group"]), Policy.from_config(settings),
                        settings["interval"], dry_run=args.dry_run, bounds=queue_bounds(job, stages))
    if args.once:
        decision = scaler.tick()
        changed = decision.target != decision.running
        note = " (dry run: nothing started or drained)" if args.dry_run and changed else ""
        print(f"{settings['group']}: {decision.describe()}{note}")
        return EXIT_OK
    stop = kit.until_signalled()
    log.info("autoscaling %s for %s between %d and %d workers", settings["group"], job.name,
             settings["min"], settings["max"])
    scaler.run(stop)
    return EXIT_OK

