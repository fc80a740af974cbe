"""Run housekeeping: ending a stuck or unwanted run by hand."""
from __future__ import annotations

import os
import socket

from swarm.context import source_of
from swarm.errors import ConfigError, MasterLocked
from swarm.ledger import MasterLedger, Run, RunStatus, known_run


def cancel(ledger: MasterLedger, run_id: str, reason: str, force: bool = False) -> Run:
    """Mark ``run_id`` cancelled with ``reason``: its workers drop its messages, and a master holding it stops.

    Refused (``MasterLocked``, naming the holder) while a master holds the
    run, unless ``force``: that master then stops at its next look at the ledger.
    """
    run = ledger.get_run(run_id)
    if run is None:
        raise ConfigError(f"no run {run_id!r}; `swarm runs` lists them")
    if run.status == RunStatus.DONE:
        raise ConfigError(f"run {run_id} is done; there is nothing to cancel")
    if run.status in (RunStatus.HELD, RunStatus.REJECTED):
        raise ConfigError(f"run {run_id} is {run.status}: its work is over; `swarm publish` or `swarm reject` "
                          "closes a held run")
    if not reason.strip():
        raise ConfigError("runs cancel: say why with --reason, for the history")
    key = source_of(run_id)  # a rerun holds its source run's lock
    holder = f"swarm runs cancel {socket.gethostname()}:{os.getpid()}"
    try:
        ledger.lock_master(key, holder)
    except MasterLocked:
        if not force:
            raise
        return _mark(ledger, run_id, reason)
    try:
        return _mark(ledger, run_id, reason)
    finally:
        ledger.unlock_master(key)


def _mark(ledger: MasterLedger, run_id: str, reason: str) -> Run:
    ledger.update_run(run_id, status=RunStatus.CANCELLED, error=f"cancelled: {reason.strip()}", finished=True)
    return known_run(ledger, run_id)
