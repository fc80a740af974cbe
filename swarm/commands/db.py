"""``swarm db``: the ledger's schema, and pruning old runs."""
from __future__ import annotations

import argparse
import time

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import ConfigError
from swarm.exits import EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    b = sub.add_parser("db", help="ledger schema, and pruning old runs")
    b.add_argument("action", choices=["init", "migrate", "prune"])
    b.add_argument("--older-than", metavar="DAYS", type=float,
                   help="prune: delete the runs that finished more than DAYS days ago, with all their rows")
    b.add_argument("--dry-run", action="store_true", help="prune: say what would be deleted, delete nothing")
    b.set_defaults(func=db)


def db(args: argparse.Namespace, cfg: Config) -> int:
    if args.action == "prune":
        return prune(args, cfg)
    if args.older_than is not None or args.dry_run:
        raise ConfigError(f"db {args.action}: --older-than and --dry-run go with `db prune`")
    applied = kit.ledger(cfg, create=True).migrate()
    print(f"ledger schema {args.action}: " + (f"applied step(s) {applied}" if applied else "up to date"))
    return EXIT_OK


def prune(args: argparse.Namespace, cfg: Config) -> int:
    if args.older_than is None or args.older_than < 0:
        raise ConfigError("db prune: --older-than DAYS is required (a number of days, 0 or more)")
    pruned = kit.ledger(cfg).prune(time.time() - args.older_than * 86400, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(pruned.runs)} run(s) that finished over {args.older_than:g} day(s) ago "
          f"({pruned.messages:,} message rows) and {pruned.dead_letters} old dead letter(s)")
    for run_id in pruned.runs:
        print(f"  {run_id}" + ("  (its night is published: its run row stays)" if run_id in pruned.kept else ""))
    return EXIT_OK
