"""``swarm runs`` and ``swarm status``: what ran, how it went, and ending a run."""
from __future__ import annotations

import argparse
from typing import Any

from swarm.commands import kit
from swarm.config import Config
from swarm.errors import ConfigError, PluginError
from swarm.exits import EXIT_OK
from swarm.ledger import RunStatus


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    r = sub.add_parser("runs", help="run history, newest first; `runs cancel RUN --reason R` ends a run")
    r.add_argument("action", nargs="?", choices=["cancel"], help="cancel: end RUN (its workers drop its messages)")
    r.add_argument("run", nargs="?", help="cancel: the run's id")
    r.add_argument("--reason", default="", help="cancel: why, kept in the run's history")
    r.add_argument("--force", action="store_true", help="cancel even while a master holds the run; it stops")
    r.add_argument("--job")
    r.add_argument("--status", choices=[s.value for s in RunStatus])
    r.add_argument("--since", help="YYYY-MM-DD (created on or after)")
    r.add_argument("--until", help="YYYY-MM-DD (created before)")
    r.add_argument("--text", help="text in the error")
    r.add_argument("--limit", type=int, default=50)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=runs)

    s = sub.add_parser("status", help="one run: phases, messages by state, checks, failures")
    s.add_argument("run")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true", help="redraw in place until the run finishes, or Ctrl-C")
    s.add_argument("--interval", type=float, default=2.0, help="--watch: seconds between redraws (default 2)")
    s.add_argument("--refreshes", type=int, metavar="N", help="--watch: stop after N views even if the run goes on")
    s.set_defaults(func=status)


def runs(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.report import print_runs

    if args.action == "cancel":
        return cancel(args, cfg)
    ledger = kit.ledger(cfg)
    found = ledger.runs(args.job, args.status, kit.day(args.since), kit.day(args.until), args.text, args.limit)
    print_runs(found, as_json=args.json)
    if not args.json:
        _print_controls(ledger, sorted({r.job for r in found if r.status == RunStatus.RUNNING}))
    return EXIT_OK


def _print_controls(ledger: Any, jobs: list[str]) -> None:
    """Under the list, what operators put in force on the jobs of its running runs (``swarm ctl``)."""
    from swarm.fleetcontrol import describe_line, summary

    lines = [line for line in (describe_line(summary(ledger, job)) for job in jobs) if line]
    if lines:
        print("in force (swarm ctl status): " + "; ".join(lines))


def cancel(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.housekeeping import cancel as end

    if not args.run:
        raise ConfigError("runs cancel: give the RUN to cancel")
    run = end(kit.ledger(cfg), args.run, args.reason, force=args.force)
    print(f"{run.id}: {run.status}: {run.error}")
    return EXIT_OK


def status(args: argparse.Namespace, cfg: Config) -> int:
    from swarm.report import print_status, status_dict, watch_status

    _check_watch(args)
    ledger = kit.ledger(cfg)
    run = ledger.get_run(args.run)
    if run is None:
        raise ConfigError(f"no run {args.run!r}; `swarm runs` lists them")
    stages = _stage_reader(cfg, run, ledger)
    try:
        if not args.watch:
            print_status(run, ledger, as_json=args.json, stages=stages(run))
            return EXIT_OK

        def load() -> tuple[Any, dict]:
            now = ledger.get_run(args.run) or run  # pruned meanwhile: the last view stays
            return now, status_dict(now, ledger, stages(now))

        watch_status(load, args.interval, refreshes=args.refreshes)
    finally:
        stages.close()
    return EXIT_OK


def _check_watch(args: argparse.Namespace) -> None:
    if not args.watch:
        if args.refreshes is not None:
            raise ConfigError("status: --refreshes goes with --watch")
        return
    if args.json:
        raise ConfigError("status: --watch redraws a view for a terminal; --json prints one snapshot: use one")
    if args.interval <= 0:
        raise ConfigError("status: --interval must be more than 0 seconds")
    if args.refreshes is not None and args.refreshes < 1:
        raise ConfigError("status: --refreshes must be 1 or more")


class _StageReader:
    """Each stage's queue depth and rate for a run, over one broker connection; nothing for a job not loaded."""

    def __init__(self, ledger: Any, queues: dict[str, str] | None, broker: Any):
        self.ledger, self.queues, self.broker = ledger, queues, broker

    def __call__(self, run: Any) -> dict | None:
        from swarm.report import stage_dict

        return None if self.queues is None else stage_dict(run, self.ledger, self.queues, self.broker.depth)

    def close(self) -> None:
        if self.broker is not None:
            self.broker.close()


def _stage_reader(cfg: Config, run: Any, ledger: Any) -> _StageReader:
    from swarm.broker import stage_queue

    try:
        job = kit.job(cfg, run.job)
    except PluginError:
        return _StageReader(ledger, None, None)  # a job this host no longer has: show what the ledger knows
    queues = {s: stage_queue(job.name, s) for s in job.stages}
    return _StageReader(ledger, queues, kit.broker(cfg))
