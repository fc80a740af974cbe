"""What the subcommands share: the job, its params, the backends and the keys from the config."""
from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import threading
import time
from typing import Any, ContextManager, Sequence

from swarm.config import Config
from swarm.errors import ConfigError, LedgerNotFound
from swarm.exits import EXIT_FAILED, EXIT_HELD, EXIT_OK
from swarm.stage import Job

log = logging.getLogger("swarm")

IN_PROCESS = ("backends.broker is {url}: an in-process broker lives and dies with one process, so a separate "
              "`swarm {command}` would never meet its {other}. Run the job in one process with "
              "`swarm run JOB --date D`, or set a shared broker (amqp://...)")


def job(cfg: Config, name: str | None) -> Job:
    """The job ``name``, else ``worker.job``."""
    from swarm.plugins import load_job

    name = name or cfg["worker"]["job"]
    if not name:
        raise ConfigError("worker.job: no job given (use --job or set worker.job / SWARM_WORKER_JOB)")
    job = load_job(name, cfg["jobs"]["modules"], cfg.job_path())
    job.default_max_queue = cfg["jobs"]["max_queue"] or None  # every process of the site reads the same
    return job


def add_params(parser: argparse.ArgumentParser) -> None:
    """``--date`` and ``--param KEY=VALUE``: a run's params."""
    parser.add_argument("--date", help="the date param (shorthand for --param date=...)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")


def params(args: argparse.Namespace) -> dict[str, str]:
    """The params ``add_params`` read."""
    found = dict(pairs(args.param, "--param"))
    if args.date:
        found["date"] = args.date
    return found


def pairs(items: Sequence[str], flag: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` items as pairs; an item without ``=`` names the flag it came with."""
    found = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        found.append((key, value))
    return found


def keys(cfg: Config) -> Any:
    """The site's signing keys; a missing key stops the command before anything connects."""
    from swarm.signing import for_site

    return for_site(cfg["security"], cfg["backends"]["broker"])


def ledger(cfg: Config, create: bool = False) -> Any:
    """The ledger; ``create`` only for commands that start work or set up the schema.

    To any other command a missing ledger means a wrong config, which an
    empty new ledger would hide.
    """
    from swarm.backends import open_ledger
    from swarm.urls import redact

    url = cfg["backends"]["ledger"]
    try:
        return open_ledger(url, create=create)
    except LedgerNotFound as exc:
        raise LedgerNotFound(f"{exc}; backends.ledger is {redact(url)}, {cfg.origin('backends.ledger')}. "
                             f"`swarm db init` creates a ledger") from None


def broker(cfg: Config, *, serve: bool = False) -> Any:
    """The broker: ``serve`` for a worker's, which consumes; else one that only publishes and reads queues."""
    from swarm.backends import open_broker

    return open_broker(cfg["backends"]["broker"], serve=serve)


def tables(cfg: Config) -> Any:
    from swarm.backends import open_tables

    return open_tables(cfg["backends"]["tables"])


def backends(cfg: Config, *, serve: bool, create_ledger: bool = True) -> tuple[Any, Any, Any]:
    """Broker (``serve``: see ``broker``), ledger and table store."""
    the_ledger = ledger(cfg, create=create_ledger)
    return broker(cfg, serve=serve), the_ledger, tables(cfg)


def in_process(cfg: Config) -> bool:
    """Whether the broker lives in this process only (``memory://``)."""
    return str(cfg["backends"]["broker"]).startswith("memory:")


def shared_broker(cfg: Config, command: str, other: str) -> None:
    """Refuse ``command`` on an in-process broker: its ``other`` half, in another process, would never meet it."""
    if in_process(cfg):
        raise ConfigError(IN_PROCESS.format(url=cfg["backends"]["broker"], command=command, other=other))


def workers_here(cfg: Config, the_job: Job, the_ledger: Any, the_tables: Any, the_keys: Any,
                 workers: int = 2) -> ContextManager[Any]:
    """Worker threads in this process when the broker is in-process (nothing else could serve it); else none."""
    from swarm.backends import open_broker
    from swarm.local import local_fleet
    from swarm.slices import SplitSettings

    url = cfg["backends"]["broker"]
    if not in_process(cfg):
        return contextlib.nullcontext()
    return local_fleet(the_job, lambda: open_broker(url), the_ledger, the_tables, workers,
                       lease=cfg["worker"]["lease"], options=cfg.options(the_job.name), keys=the_keys,
                       split=SplitSettings.of(cfg["split"]))


def serve_metrics(cfg: Config, section: str, the_job: Job, stage: str, the_broker: Any, the_ledger: Any,
                  the_tables: Any) -> int | None:
    """``/metrics``, ``/healthz`` and ``/readyz`` on ``<section>.metrics_port`` (0: not served); the port."""
    from swarm.broker import stage_queue
    from swarm.metrics import ReadinessCheck, backend_probes, url_passwords
    from swarm.metrics import serve_metrics as serve

    settings = cfg[section]
    if not settings["metrics_port"]:
        return None
    urls = [cfg["backends"][key] for key in ("broker", "ledger", "tables")]
    ready = ReadinessCheck(backend_probes(the_broker, the_ledger, the_tables, stage_queue(the_job.name, stage)),
                           secrets=url_passwords(urls))
    try:
        return serve(settings["metrics_port"], settings["metrics_bind"], ready=ready)
    except OSError as exc:  # the night's run matters more than its metrics
        log.error("cannot serve metrics on %s:%d (%s.metrics_bind, metrics_port): %s; going on without them",
                  settings["metrics_bind"], settings["metrics_port"], section, exc.strerror or exc)
        return None


def finished(run: Any) -> int:
    """Print how a run ended; its exit code."""
    print(f"{run.id}: {run.status}" + (f": {run.error}" if run.error else ""))
    return {"done": EXIT_OK, "held": EXIT_HELD}.get(run.status, EXIT_FAILED)


def day(text: str | None) -> float | None:
    """A ``YYYY-MM-DD`` option as a local timestamp; None for none."""
    if not text:
        return None
    return time.mktime(time.strptime(text, "%Y-%m-%d"))


def until_signalled() -> threading.Event:
    """An event SIGTERM and SIGINT set: the process finishes what it holds, then stops."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
