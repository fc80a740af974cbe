"""The master's progress: a live bar on a terminal, plain periodic lines otherwise."""
from __future__ import annotations

import logging
import sys
import time
from typing import Mapping

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from swarm.ledger import MessageState

log = logging.getLogger("swarm.master")


class ProgressReport:
    """Called by the master with a phase's message counts after every look at the ledger."""

    def __init__(self, console: Console | None = None, interval: float = 10.0, live: bool | None = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.interval = interval
        self._bar: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._last_line: float | None = None  # the first line is always said

    def __call__(self, run: str, phase: str, counts: Mapping[MessageState, int]) -> None:
        total = sum(counts.values())
        done = counts.get(MessageState.DONE, 0)
        if self.live:
            self._update_bar(phase, done, total, counts.get(MessageState.DEAD, 0))
        elif self._last_line is None or time.monotonic() - self._last_line >= self.interval or done == total:
            self._last_line = time.monotonic()
            states = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
            log.info("run %s phase %s: %d/%d done (%s)", run, phase, done, total, states)

    def _update_bar(self, phase: str, done: int, total: int, dead: int) -> None:
        if self._bar is None:
            self._bar = Progress(
                TextColumn("[bold]{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=self.console,
            )
            self._bar.start()
        if phase not in self._tasks:
            self._tasks[phase] = self._bar.add_task(phase, total=total, note="")
        note = f"[red]{dead} dead" if dead else ""
        self._bar.update(self._tasks[phase], completed=done, total=total, note=note)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def is_terminal() -> bool:
    return sys.stderr.isatty()
