"""The processes the console starts: a rerun's dry run (waited for), a master or rerun (left running).

Each is the ``swarm`` command itself, with the console's config and
environment, so it does exactly what an operator typing it would: the
same locks refuse it, the same logs tell its story. A started process runs
in a session of its own and outlives the console; its output goes to a log
in ``console.log_dir``.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from swarm.config import Config

DRY_RUN_TIMEOUT = 120.0  # seconds; a dry run reads the ledger and, for a mid-phase rerun, its recorded messages
OUTPUT_LIMIT = 64 * 1024  # characters of a dry run's output shown
KEPT = 20  # processes started lately that the reruns page lists


@dataclass(frozen=True)
class Finished:
    code: int
    output: str


@dataclass(frozen=True)
class Started:
    pid: int
    log: Path
    argv: tuple[str, ...]
    at: float = 0.0


@dataclass(frozen=True)
class Launched:
    """A process this console started: how it stands, and the end of its log."""

    started: Started
    code: int | None  # None while it runs
    tail: str


class Launcher:
    """Runs ``swarm`` commands with one config; keeps the processes it started until they end."""

    def __init__(self, cfg: Config, log_dir: Path | None = None):
        self.cfg = cfg
        self.log_dir = log_dir or Path(str(cfg["console"]["log_dir"]))
        self._children: list[subprocess.Popen] = []
        self._started: list[tuple[Started, subprocess.Popen]] = []  # the latest KEPT, newest last

    def base(self) -> list[str]:
        config = [] if self.cfg.source == "defaults" else ["--config", os.path.abspath(self.cfg.source)]
        return [sys.executable, "-m", "swarm.cli", *config]

    def run(self, args: Sequence[str], timeout: float = DRY_RUN_TIMEOUT) -> Finished:
        """Run ``swarm args...`` to its end (a dry run); its output, both streams, cut to a size a page shows."""
        try:
            done = subprocess.run([*self.base(), *args], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, errors="replace")
        except subprocess.TimeoutExpired:
            return Finished(-1, f"no answer within {timeout:.0f} s: the ledger or the broker may be hanging")
        output = (done.stdout + done.stderr)[:OUTPUT_LIMIT]
        return Finished(done.returncode, output)

    def start(self, args: Sequence[str], label: str) -> Started:
        """Start ``swarm args...`` in the background, in a session of its own; its log is named by ``label``."""
        self.reap()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{_safe(label)}.log"
        path = self.log_dir / name
        argv = (*self.base(), *args)
        with open(path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self._children.append(proc)
        started = Started(proc.pid, path, tuple(args), time.time())
        self._started = [*self._started, (started, proc)][-KEPT:]
        return started

    def reap(self) -> None:
        """Forget the children that ended (no zombies left behind)."""
        self._children = [p for p in self._children if p.poll() is None]

    def launched(self) -> list[Launched]:
        """What this console started lately, newest first, each with the last lines of its log."""
        return [Launched(s, proc.poll(), _tail(s.log)) for s, proc in reversed(self._started)]


def _tail(path: Path, lines: int = 6, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - limit))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", label)[:80]
