"""Alerts: a run that fails or misses its deadline runs a hook command with a JSON description."""
from __future__ import annotations

import json
import logging
import shlex
import subprocess
from typing import Any, Callable, Mapping

log = logging.getLogger("swarm.alerts")
Alert = Callable[[Mapping[str, Any]], None]


def no_alert(event: Mapping[str, Any]) -> None:
    log.debug("no alert command configured for %s", event.get("event"))


def command_alert(command: str, timeout: float = 60.0) -> Alert:
    """An ``Alert`` that runs ``command`` with the event as JSON on its standard input.

    A failing hook is logged, never raised: an alert must not break the run it reports.
    """
    if not command:
        return no_alert
    argv = shlex.split(command)

    def send(event: Mapping[str, Any]) -> None:
        body = json.dumps(dict(event), sort_keys=True, default=str)
        try:
            done = subprocess.run(argv, input=body, text=True, capture_output=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("alert command %s could not run: %s", argv[0], exc)
            return
        if done.returncode != 0:
            log.error("alert command %s exited %d: %s", argv[0], done.returncode, done.stderr.strip()[:500])

    return send
