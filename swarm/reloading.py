"""Re-reading a running process's config file (``swarm ctl reload``): what is safe applied live, the rest named.

A reload reads the file the process started with again. The file wins over
the ``SWARM_*`` variables the process was started with for every setting the
file sets: under supervisord those variables are a render of the same file,
made before it was edited. A setting the file does not set keeps its variable.

Each changed setting is either applied at once, by the applier the process
gave for it, or listed as needing a restart (with how, where that is not a
plain restart); the values in effect move only for the applied ones, so a
setting that needs a restart is named again by every reload until then. A
file that does not load (bad TOML, a bad value) changes nothing and says why.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

from swarm import config as config_mod
from swarm.config import DEFAULTS, SECRETS, URLS, Config
from swarm.logsetup import set_format, set_level
from swarm.urls import redact

log = logging.getLogger("swarm.control")

# How a setting that cannot change live takes effect, where that is not a restart of the worker.
HOW = {
    "worker.drain_seconds": "render the supervisord config again: its stopwaitsecs",
    "worker.processes": "render the supervisord config again",
    "worker.metrics_port": "render the supervisord config again",
}
for _key in DEFAULTS["master"]:
    HOW[f"master.{_key}"] = "read by each master when it starts"
for _key in DEFAULTS["autoscale"]:
    HOW[f"autoscale.{_key}"] = "read by `swarm autoscale` when it starts: restart it"

Applier = Callable[[Any], None]


def log_appliers() -> dict[str, Applier]:
    """What every process can apply live: its log level and format."""
    return {"log.level": set_level, "log.format": set_format}


@dataclasses.dataclass(frozen=True)
class Changes:
    """What one reload found: per setting, ``(before, after)``, shown redacted."""

    applied: Mapping[str, tuple[Any, Any]]
    restart: Mapping[str, tuple[Any, Any]]

    def describe(self) -> str:
        if not self.applied and not self.restart:
            return "nothing changed"
        parts = []
        if self.applied:
            parts.append("applied " + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in self.applied.items()))
        if self.restart:
            parts.append("not applied, needs a restart: " + ", ".join(
                f"{k} {a!r} -> {b!r}" + (f" ({HOW[k]})" if k in HOW else "") for k, (a, b) in self.restart.items()))
        return "; ".join(parts)


class LiveConfig:
    """A process's settings in effect, re-read from its config file on request."""

    def __init__(self, cfg: Config, appliers: Mapping[str, Applier],
                 env: Mapping[str, str] | None = None):
        self.cfg = cfg
        self.appliers = dict(appliers)
        self.env = os.environ if env is None else env
        self.effective = _flat(cfg)

    def reload(self) -> Changes | None:
        """Re-read the file and apply what may change live; None (said why) when there is no file or it is bad."""
        if self.cfg.source == "defaults":
            log.warning("reload: this process was started without a config file; nothing to re-read")
            return None
        try:
            new = reread(self.cfg.source, self.env)
        except Exception as exc:  # noqa: BLE001 - a bad file changes nothing; the process goes on as it was
            log.error("reload: %s could not be read, nothing changed: %s", self.cfg.source, exc)
            return None
        fresh = _flat(new)
        applied: dict[str, tuple[Any, Any]] = {}
        restart: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(fresh) | set(self.effective)):
            before, after = self.effective.get(key), fresh.get(key)
            if before == after:
                continue
            shown = (_shown(key, before), _shown(key, after))
            apply = self.appliers.get(key)
            if apply is None:
                restart[key] = shown
                continue
            try:
                apply(after)
            except Exception as exc:  # noqa: BLE001 - one setting that will not apply leaves the others
                log.error("reload: %s could not be applied: %s", key, exc)
                restart[key] = shown
                continue
            applied[key] = shown
            self.effective[key] = after
        changes = Changes(applied, restart)
        level = logging.WARNING if restart else logging.INFO
        log.log(level, "reloaded %s: %s", self.cfg.source, changes.describe())
        return changes


def reread(path: str, env: Mapping[str, str]) -> Config:
    """The config in ``path`` again, its settings winning over the ``SWARM_*`` variables in ``env``."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        raw = {}  # config.load says what is wrong with it
    in_file = {f"SWARM_{section.upper()}_{key.upper()}" for section, table in raw.items()
               if section in DEFAULTS and isinstance(table, dict) for key in table}
    return config_mod.load(path, {k: v for k, v in env.items() if k not in in_file})


def _flat(cfg: Config) -> dict[str, Any]:
    """Every setting as ``section.key`` (``options.job.key``): its value."""
    out: dict[str, Any] = {}
    for section, table in cfg.data.items():
        for key, value in table.items():
            if section == "options" and isinstance(value, dict):
                out.update({f"options.{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{section}.{key}"] = value
    return out


def _shown(key: str, value: Any) -> Any:
    section, _, name = key.partition(".")
    if (section, name) in SECRETS and value:
        return "***"
    if key in URLS and isinstance(value, str):
        return redact(value)
    return value
