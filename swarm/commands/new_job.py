"""``swarm new-job``: a working job to start from."""
from __future__ import annotations

import argparse

from swarm.config import Config
from swarm.exits import EXIT_OK


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    j = sub.add_parser("new-job", help="write a working job to start from: module, tests, sample data, config")
    j.add_argument("name", help="the job's name, also its module's: lower case letters, digits and _")
    j.add_argument("--dir", default=".", help="where to write it (default: here)")
    j.set_defaults(func=new_job)


def new_job(args: argparse.Namespace, cfg: Config) -> int:
    from pathlib import Path

    from swarm.scaffold import SAMPLE_DATE
    from swarm.scaffold import new_job as write

    for path in write(args.name, Path(args.dir)):
        print(f"wrote {path}")
    n = args.name
    print(f"next: swarm tables create {n} && swarm tables load {n}_events {n}_sample.jsonl && "
          f"pytest test_{n}.py && swarm run {n} --date {SAMPLE_DATE}")
    return EXIT_OK
