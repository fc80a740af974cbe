"""``swarm publish``, ``swarm reject`` and ``swarm generations``: a night's result and the generations behind it."""
from __future__ import annotations

import argparse
import os
import socket

from swarm.commands import kit
from swarm.config import Config
from swarm.exits import EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("publish", help="publish a held run's result despite its failed checks (exit 0 published, "
                                       "2 the run is not held)")
    p.add_argument("run")
    p.add_argument("--reason", required=True, help="why, kept in the run's history")
    p.set_defaults(func=publish)

    r = sub.add_parser("reject", help="reject a held run: its result is never published (exit 0 rejected, "
                                      "2 the run is not held)")
    r.add_argument("run")
    r.add_argument("--reason", required=True, help="why, kept in the run's history")
    r.set_defaults(func=reject)

    g = sub.add_parser("generations", help="each night's runs and whether their rows are kept; --prune removes "
                                           "the generations nothing reads")
    g.add_argument("job")
    kit.add_params(g)
    g.add_argument("--prune", action="store_true", help="delete the rows of the generations not kept")
    g.add_argument("--dry-run", action="store_true", help="--prune: count the rows, delete nothing")
    g.set_defaults(func=generations)


def _holder(command: str) -> str:
    return f"swarm {command} {socket.gethostname()}:{os.getpid()}"


def publish(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.publishing import publish_held

    ledger, tables = kit.ledger(cfg), kit.tables(cfg)
    run = _run(ledger, args.run)
    run = publish_held(kit.job(cfg, run.job), run.id, args.reason, ledger, tables, _holder("publish"))
    print(f"{run.id}: {run.status}: published by hand: {args.reason.strip()}")
    return EXIT_OK


def reject(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.publishing import reject_held

    run = reject_held(args.run, args.reason, kit.ledger(cfg), _holder("reject"))
    print(f"{run.id}: {run.status}: {args.reason.strip()}")
    return EXIT_OK


def generations(args: argparse.Namespace, cfg: Config) -> int:
    from swarm import generations as gens

    job = kit.job(cfg, args.job)
    ledger, tables = kit.ledger(cfg), kit.tables(cfg)
    params = kit.params(args)
    only = [job.run_id(params)] if params else None
    for night, runs in gens.nights(job, ledger).items():
        if only is None or night in only:
            print(night)
            for g in gens.generations(job, ledger, night, runs):
                print(f"  {g.run.id}  {g.run.status}  {g.kept or 'not read: may be pruned'}")
    if args.prune:
        deleted = gens.prune(job, ledger, tables, dry_run=args.dry_run, only=only)
        verb = "would delete" if args.dry_run else "deleted"
        for run_id, rows in deleted.items():
            print(f"{verb} {rows} row(s) of {run_id}")
        print(f"{verb} {sum(deleted.values())} row(s) of {len(deleted)} generation(s)")
    return EXIT_OK


def _run(ledger, run_id: str):
    from swarm.errors import ConfigError

    run = ledger.get_run(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r}; `swarm runs` lists them")
    return run
