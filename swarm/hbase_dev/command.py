"""``swarm hbase-dev``: the HBase Thrift development server, a test stand-in (registered as an entry point)."""
from __future__ import annotations

import argparse

from swarm.config import Config
from swarm.exits import EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    h = sub.add_parser("hbase-dev", add_help=False,
                       help="the HBase Thrift development server (a test stand-in, not a store); --help for options")
    h.set_defaults(func=hbase_dev, passthrough=True)  # the server parses its own options


def hbase_dev(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.hbase_dev.server import main

    return main(args.args) or EXIT_OK
