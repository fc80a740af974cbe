"""The ``swarm`` command: reads the config, runs one subcommand, maps what went wrong to an exit code.

The subcommands live in ``swarm.commands`` and, for the master and the
worker, in the applications' own ``commands`` modules (entry points).
"""
from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from swarm import config as config_mod
from swarm.commands import register_all
from swarm.errors import SwarmError
from swarm.exits import (  # noqa: F401 - the exit codes, as scripts and tests name them
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_SOFTWARE,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    exit_for,
)
from swarm.logsetup import setup_logging


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
    except SwarmError as exc:  # a command plugin that cannot be loaded
        print(f"swarm: {exc}", file=sys.stderr)
        return exit_for(exc)[0]
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.args = extra  # the command parses its own options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        cfg = config_mod.load(args.config)
        setup_logging(str(cfg["log"]["level"]), cfg["log"]["format"])
        return int(args.func(args, cfg))
    except SwarmError as exc:
        code, prefix = exit_for(exc)
        print(f"swarm: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:  # a bug; Python's own exit 1 would read as "the run failed"
        traceback.print_exc()
        print(f"swarm: unexpected error (traceback above); exit {EXIT_SOFTWARE}", file=sys.stderr)
        return EXIT_SOFTWARE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="swarm", description="Staged, checkpointing batch work over HBase.")
    p.add_argument("--config", help="TOML config file (default: swarm.toml if present)")
    register_all(p.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return p


if __name__ == "__main__":
    sys.exit(main())
