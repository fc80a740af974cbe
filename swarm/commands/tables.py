"""``swarm tables``: the table store: list, create a job's tables, load, scan, count, drop."""
from __future__ import annotations

import argparse
import sys
from typing import Any

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import ConfigError
from swarm.exits import EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    t = sub.add_parser("tables", help="the table store: list, create a job's tables, load, scan, count, drop")
    t.add_argument("action", choices=["list", "create", "load", "scan", "count", "drop"])
    t.add_argument("target", nargs="?", help="create: the JOB whose declared tables to make; load, scan, count, "
                                             "drop: the TABLE")
    t.add_argument("file", nargs="?", help="load: a JSON Lines (.jsonl) or CSV (.csv) file")
    t.add_argument("--format", choices=["jsonl", "csv"], help="load: the file's format (default: from its name)")
    t.add_argument("--key", default="row", help="load: the field that holds the row key (default: row)")
    t.add_argument("--family", help="load: the column family of fields not named family:qualifier")
    t.add_argument("--batch", type=int, default=1000, help="load: rows per write (default 1000)")
    t.add_argument("--prefix", help="scan, count: rows whose key starts with this")
    t.add_argument("--start", default="", help="scan, count: first key (inclusive)")
    t.add_argument("--stop", default="", help="scan, count: last key (exclusive)")
    t.add_argument("--columns", help="scan: comma-separated family:qualifier or family: columns")
    t.add_argument("--limit", type=int, default=20, help="scan: at most this many rows (default 20; 0: all)")
    t.add_argument("--json", action="store_true", help="scan: JSON Lines")
    t.add_argument("--yes", action="store_true", help="drop: really delete the table and every row in it")
    t.set_defaults(func=tables_command)


def tables_command(args: argparse.Namespace, cfg: Config) -> int:
    from swarm import tabletools

    if args.action != "list" and not args.target:
        what = "JOB" if args.action == "create" else "TABLE"
        raise ConfigError(f"tables {args.action}: give the {what}")
    tables = kit.tables(cfg)
    try:
        if args.action == "list":
            print("\n".join(tables.tables()) or "(no tables)")
        elif args.action == "create":
            for name, made in tabletools.create(tables, kit.job(cfg, args.target)):
                print(f"{name}: {'created' if made else 'exists'}")
        elif args.action == "load":
            _load(tables, args)
        elif args.action in ("scan", "count"):
            _scan(tables, args)
        else:
            _drop(tables, args)
    finally:
        tables.close()
    return EXIT_OK


def _load(tables: Any, args: argparse.Namespace) -> None:
    from pathlib import Path

    from swarm import tabletools

    if not args.file:
        raise ConfigError("tables load: give the TABLE and the FILE to load")
    n = tabletools.load(tables, args.target, Path(args.file), args.format, args.key, args.family,
                        max(1, args.batch), progress=sys.stderr.isatty())
    print(f"loaded {n:,} row(s) into {args.target}")


def _scan(tables: Any, args: argparse.Namespace) -> None:
    from swarm import tabletools

    if args.action == "count":
        print(tabletools.count(tables, args.target, args.prefix, args.start, args.stop))
        return
    columns = [c for c in (args.columns or "").split(",") if c]
    for row in tabletools.scan(tables, args.target, args.prefix, args.start, args.stop, columns, args.limit or None):
        print(tabletools.show(row, as_json=args.json))


def _drop(tables: Any, args: argparse.Namespace) -> None:
    if args.target not in tables.tables():
        raise ConfigError(f"tables drop: no table {args.target!r}")
    if not args.yes:
        raise ConfigError(f"tables drop {args.target}: this deletes the table and every row; add --yes to do it")
    tables.drop_table(args.target)
    print(f"dropped {args.target}")
