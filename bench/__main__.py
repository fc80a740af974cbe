"""``python -m bench`` (``make bench``): every case in one run on the local RabbitMQ and MariaDB.

Sizes scale with ``--scale`` (or ``BENCH_SCALE``); ``--cases`` (or
``BENCH_CASES``) picks cases. The table is printed and the results written
to ``bench/results/latest.json`` and a dated copy. A failed case is
reported and the others still run; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import traceback
from pathlib import Path
from typing import Callable

import pymysql
from rich.console import Console

from bench import report
from bench.site import bench_site
from tests.support.mysql import MYSQL
from tests.support.rabbitmq import rabbitmqctl
from tests.support.site import Site

CASES = ("raw", "swarm", "celery", "nightly", "skew", "master", "security", "backpressure",
         "overload")  # overload last: RabbitMQ purges after
OVERLOAD_BOUND = 5000  # max_queue of both stages in the bounded overload case
RESULTS = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Sizes:
    raw_chunks: int = 20_000
    raw_prefetch: int = 1000
    swarm_chunks: int = 20_000
    celery_chains: int = 3000
    nightly_events: int = 100_000
    nightly_chunks: int = 32
    skew_events: int = 100_000  # per day; two days, splitting off and on
    skew_slice_rows: int = 5000
    overload_seconds: float = 30.0
    master_chunks: int = 100_000
    backpressure_chunks: int = 12_000

    def scaled(self, scale: float) -> "Sizes":
        def n(value: int, least: int) -> int:
            return max(least, int(value * scale))

        return dataclasses.replace(
            self, raw_chunks=n(self.raw_chunks, 200), swarm_chunks=n(self.swarm_chunks, 100),
            celery_chains=n(self.celery_chains, 100), nightly_events=n(self.nightly_events, 2000),
            skew_events=n(self.skew_events, 4000), skew_slice_rows=n(self.skew_slice_rows, 200),
            overload_seconds=max(10.0, self.overload_seconds * min(scale, 1.0)),
            master_chunks=n(self.master_chunks, 1000), backpressure_chunks=n(self.backpressure_chunks, 1000))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=float(os.environ.get("BENCH_SCALE", "1")),
                   help="multiply every size (default BENCH_SCALE or 1)")
    p.add_argument("--cases", default=os.environ.get("BENCH_CASES", ",".join(CASES)),
                   help=f"comma-separated, from {','.join(CASES)} (default BENCH_CASES or all)")
    p.add_argument("--procs", default=os.environ.get("BENCH_PROCS", "1,2"),
                   help="Swarm worker process counts to run the no-op job with (default 1,2)")
    p.add_argument("--celery-concurrency", type=int, default=os.cpu_count() or 2,
                   help="Celery prefork children (default: the core count, Celery's own default)")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON results")
    p.add_argument("--keep-logs", type=Path, help="copy the processes' logs here")
    return p


def host() -> dict:
    rabbitmq = rabbitmqctl("version").strip()
    db = pymysql.connect(**MYSQL)
    try:
        with db.cursor() as cur:
            cur.execute("SELECT VERSION()")
            (mariadb,) = cur.fetchone()
    finally:
        db.close()
    return {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "rabbitmq": rabbitmq, "mariadb": mariadb}


class Bench:
    """Runs the chosen cases on one site; each case's result lands in ``results``."""

    def __init__(self, args: argparse.Namespace, console: Console):
        self.args, self.console = args, console
        self.sizes = Sizes().scaled(args.scale)
        self.procs = sorted({int(p) for p in args.procs.split(",") if p.strip()})
        self.results: dict = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": host(), "scale": args.scale, "sizes": dataclasses.asdict(self.sizes),
        }
        self.failed: list[str] = []

    def run(self, cases: list[str]) -> dict:
        with bench_site(self.args.keep_logs) as site:
            for case in cases:
                self._case(case, lambda c=case: getattr(self, f"_{c}")(site))
        return report.finish(self.results)

    def _case(self, name: str, body: Callable[[], None]) -> None:
        self.console.log(f"case {name} ...")
        try:
            body()
        except Exception:  # noqa: BLE001 - report it, run the other cases
            self.failed.append(name)
            self.results.setdefault("errors", {})[name] = traceback.format_exc()
            self.console.print_exception()

    def _raw(self, site: Site) -> None:
        from bench import raw_pika, swarm_noop

        s = self.sizes
        self.results["raw_pika"] = raw_pika.run(site.amqp, s.raw_chunks, s.raw_prefetch).as_dict() | {
            "prefetch": s.raw_prefetch}
        matched = swarm_noop.prefetch()
        self.results["raw_pika_matched"] = raw_pika.run(site.amqp, s.raw_chunks // 4, matched).as_dict() | {
            "prefetch": matched}

    def _swarm(self, site: Site) -> None:
        from bench import swarm_noop

        runs = self.results.setdefault("swarm", {})
        for i, procs in enumerate(self.procs):
            runs[str(procs)] = swarm_noop.run(site, self.sizes.swarm_chunks, procs, f"2030-01-{i + 1:02d}")

    def _celery(self, site: Site) -> None:
        from bench import celery_case

        self.results["celery"] = celery_case.run(site, self.sizes.celery_chains, self.args.celery_concurrency)

    def _nightly(self, site: Site) -> None:
        from bench import nightly

        s = self.sizes
        self.results["nightly"] = nightly.run(site, s.nightly_events, s.nightly_chunks, max(self.procs))

    def _skew(self, site: Site) -> None:
        from bench import skew

        s = self.sizes
        self.results["skew"] = skew.run(site, s.skew_events, s.nightly_chunks, max(self.procs), s.skew_slice_rows)

    def _overload(self, site: Site) -> None:
        from bench import overload

        peak = report.fleet(self.results)
        if peak is None:
            raise RuntimeError("the overload case needs the swarm case's peak: run both")
        args = (site, peak["msgs_per_s"], peak["procs"], self.sizes.overload_seconds)
        self.results["overload"] = overload.run(*args)
        self.results["overload_backlog"] = overload.run_backlog(*args)
        self.results["overload_bounded"] = overload.run(*args, date="2030-03-03", max_queue=OVERLOAD_BOUND)

    def _backpressure(self, site: Site) -> None:
        from bench import backpressure

        self.results["backpressure"] = backpressure.run(site, self.sizes.backpressure_chunks, max(self.procs))

    def _security(self, site: Site) -> None:
        from bench import security_case

        self.results["security"] = security_case.run(site)

    def _master(self, site: Site) -> None:
        from bench import master_case

        self.results["master"] = master_case.run(site, self.sizes.master_chunks)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        print(f"bench: unknown case(s) {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file: no terminal to fold the table for
    bench = Bench(args, console)
    results = bench.run(cases)
    report.show(results, console)
    for path in report.write(results, args.out):
        console.print(f"wrote {path}")
    if bench.failed:
        console.print(f"[red]failed: {', '.join(bench.failed)}")
    return 1 if bench.failed else 0


if __name__ == "__main__":
    sys.exit(main())
