"""``swarm dlq``: dead letters, with their reasons: list, show, replay."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import BackendError, ConfigError
from swarm.exits import EXIT_OK, EXIT_UNAVAILABLE

if TYPE_CHECKING:
    from swarm.broker import Broker


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    q = sub.add_parser("dlq", help="dead letters: list, show, replay")
    q.add_argument("action", choices=["list", "show", "replay"])
    q.add_argument("ids", nargs="*", type=int, help="dead-letter ids (show/replay)")
    q.add_argument("--job", help="collect dead letters from this job's queues first")
    q.add_argument("--all", action="store_true", help="replay every listed dead letter")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=dlq_command)


def dlq_command(args: argparse.Namespace, cfg: Config) -> int:
    from swarm import dlq

    ledger = kit.ledger(cfg)
    if args.action == "show":  # reads the ledger only, unless asked to gather a job's letters first
        if args.job:
            _gather(args, cfg, kit.broker(cfg), ledger)
        for dl_id in args.ids:
            dlq.print_one(ledger, dl_id, as_json=args.json)
        return EXIT_OK
    broker = kit.broker(cfg)
    code = _gather(args, cfg, broker, ledger)
    if args.action == "list":
        dlq.print_list(ledger.dead_letters(), as_json=args.json)
        return code
    return _replay(args, broker, ledger)


def _gather(args: argparse.Namespace, cfg: Config, broker: Broker, ledger: Any) -> int:
    """Dead letters from the broker into the ledger: the job's (``--job``), or every job's before a listing."""
    from swarm import dlq

    if args.job:
        dlq.collect(broker, ledger, kit.job(cfg, args.job))
    elif args.action == "list":
        return _collect_every_job(cfg, broker, ledger)
    return EXIT_OK


def _replay(args: argparse.Namespace, broker: Broker, ledger: Any) -> int:
    from swarm import dlq

    ids = [d.id for d in ledger.dead_letters()] if args.all else args.ids
    if not ids:
        raise ConfigError("dlq replay: give dead-letter ids or --all")
    replayed = dlq.replay(broker, ledger, ids)
    print(f"replayed {replayed} dead letter(s)")
    if not broker.outlives_process:
        print("the in-process broker keeps nothing between commands: `swarm run JOB --date D` sends them")
    return EXIT_OK


def _collect_every_job(cfg: Config, broker: Broker, ledger: Any) -> int:
    """Gather the dead letters of every job the ledger has runs of, before listing them.

    A job this host cannot load is skipped with a warning; a broker that
    cannot be read leaves the listing to what the ledger has, and exit 75.
    """
    from swarm import dlq

    try:
        dlq.collect_every_job(broker, ledger, lambda name: kit.job(cfg, name),
                              lambda line: print(f"swarm: warning: {line}", file=sys.stderr))
    except BackendError as exc:
        print(f"swarm: warning: cannot gather dead letters ({exc}); listing those the ledger has", file=sys.stderr)
        return EXIT_UNAVAILABLE
    return EXIT_OK
