"""Configuration: one TOML file, every key overridable by ``SWARM_<SECTION>_<KEY>``.

``[options.<job>]`` keys are overridable by ``SWARM_OPTIONS__<JOB>__<KEY>``.
A wrong key or value fails at start with the key named, and so does a
``SWARM_*`` environment variable that sets nothing (a misspelt one would
otherwise be ignored without a word), unless ``ENV_NOT_SETTINGS`` lists it.
URLs are shown only redacted. ``backends.<role>_password_file`` puts the
content of a file into that URL as its password when the config is loaded,
so the rest of Swarm sees one complete URL.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any, Mapping

from swarm.errors import ConfigError
from swarm.urls import check_credentials, check_url, redact, with_password

DEFAULTS: dict[str, dict[str, Any]] = {
    "backends": {
        "broker": "memory://",
        "ledger": "sqlite:///swarm.db",
        "tables": "embedded:///swarm-tables.db",
        "broker_password_file": "",  # the broker URL's password, read from this file at load
        "ledger_password_file": "",
    },
    "jobs": {
        "modules": [],  # job modules besides the swarm.jobs entry points
        "path": [],  # directories searched for those modules first, relative to the config file's
        "max_queue": 0,  # the bound of every stage queue whose stage sets no max_queue; 0: unbounded
    },
    "worker": {
        "job": "",
        "stages": [],  # empty: every stage of the job
        "lease": 60.0,
        "processes": 2,
        "metrics_port": 0,  # 0: no /metrics, /healthz, /readyz
        "metrics_bind": "127.0.0.1",  # the address they listen on; 0.0.0.0 for a scraper on another host
        "drain_seconds": 600,
    },
    "master": {
        "poll": 1.0,
        "window": 10000,  # ready messages a phase keeps ahead on each stage queue; 0: the whole phase at once
        "lost_after": 120.0,
        "patience": 900.0,  # seconds a broker or ledger outage is waited out before the master exits 75
        "metrics_port": 0,
        "metrics_bind": "127.0.0.1",
        "alert_command": "",
        "deadline": "",
    },
    "autoscale": {  # `swarm autoscale`: worker processes under supervisord, by queue depth
        "min": 1,
        "max": 4,  # the supervisord program needs this many processes (numprocs)
        "interval": 5.0,  # seconds between looks at the queues
        "up_depth": 100,  # messages waiting per running worker before another one starts
        "down_idle_seconds": 300.0,  # fewer workers would do for this long before one is drained
        "supervisor_url": "unix:///run/swarm/supervisor.sock",  # or http://127.0.0.1:9001
        "group": "swarm-worker",  # the supervisord program of the workers
    },
    "security": {  # the site key that signs every message (swarm.signing); never in the TOML file itself
        "key_file": "",
        "previous_key_file": "",  # while rotating: still accepted, no longer used to sign
        "key": "",  # SWARM_SECURITY_KEY only
        "previous_key": "",  # SWARM_SECURITY_PREVIOUS_KEY only
    },
    "split": {  # the rest of a phase's last long key ranges, split among idle threads (swarm.slices)
        "enabled": False,
        "ways": 4,  # sub-ranges a rest is cut into
        "tail": 8,  # split only while the phase has at most this many open messages
        "min_rows": 10_000,  # a rest estimated to hold fewer rows is not split
    },
    "console": {  # `swarm ui`: the web console
        "bind": "127.0.0.1",  # the address it listens on; another than loopback only by naming it here
        "port": 8080,
        "users_file": "",  # lines `name:scrypt$...` (`swarm ui --add-user NAME` writes them): they may act
        "token_file": "",  # a file holding a token: whoever presents it may act (login form, or Bearer header)
        "session_key_file": "",  # signs session cookies; empty: a new key each start (everyone logs in again)
        "secure_cookies": False,  # true behind HTTPS: the session cookie is sent over HTTPS only
        "session_hours": 12.0,
        "root_path": "",  # the path prefix a reverse proxy serves it under, as /swarm
        "supervisors": [],  # supervisord URLs of the fleet's hosts (unix:// or http://), for the fleet page
        "metrics": [],  # the workers' /metrics URLs, for each stage's pool limit and busy threads
        "log_dir": "console-logs",  # where the masters and reruns it starts write their logs
    },
    "log": {
        "level": "INFO",
        "format": "text",  # or "json": one object a line (ts in UTC, level, logger, message, exc)
    },
}
LOG_FORMATS = ("text", "json")
PASSWORD_FILES = {"broker": "broker_password_file", "ledger": "ledger_password_file"}  # URL key: its file key
# Settings that are URLs: shown only redacted, and refused when a password in them is not percent-encoded.
URLS = ("backends.broker", "backends.ledger", "backends.tables", "autoscale.supervisor_url")
URL_LISTS = ("console.supervisors", "console.metrics")  # lists of URLs: each shown only redacted
FREE_SECTIONS = ("options",)  # [options.<job>] tables go to that job's planners and handlers as-is
SECRETS = {("security", "key"), ("security", "previous_key")}  # from the environment only, never shown
ENV_PREFIX = "SWARM_"
# [options.<job>] keys: SWARM_OPTIONS__<JOB>__<KEY>. Double underscores, because job names
# and keys have single ones.
OPTIONS_ENV_PREFIX = "SWARM_OPTIONS__"
# SWARM_* variables that are not settings: read by another part of Swarm, so not refused as unknown.
ENV_NOT_SETTINGS = {
    "SWARM_FAILPOINTS": "named places where a test kills the process (swarm.failpoints)",
}


class Config:
    """Validated settings; ``config["worker"]["lease"]`` style access."""

    def __init__(self, data: Mapping[str, Mapping[str, Any]], source: str = "defaults",
                 origins: Mapping[str, str] | None = None):
        self.data = data
        self.source = source
        # "section.key" (or "options.job.key"): the variable that set it, "file", or "an override"
        self.origins = dict(origins or {})

    def origin(self, key: str) -> str:
        """Where the setting ``key`` (``section.key``) came from, for an error that must say so."""
        where, file = self.origins.get(key), os.path.abspath(self.source)
        if where == "file":
            return f"set in {file}"
        if where:
            return f"set by {where}" + (f" (config file {file})" if self.source != "defaults" else "")
        if self.source == "defaults":
            return f"the default: no config file was read (no --config, and no swarm.toml in {os.getcwd()})"
        return f"the default: {file} does not set it"

    def source_of(self, key: str) -> str:
        """Where ``key`` came from, in a word: ``file``, the variable that set it, ``override`` or ``default``."""
        where = self.origins.get(key)
        if where is None:
            return "default"
        return "override" if where == "an override" else where

    def __getitem__(self, section: str) -> Mapping[str, Any]:
        return self.data[section]

    def job_path(self) -> list[str]:
        """``jobs.path`` as absolute directories: relative ones are from the config file's directory."""
        base = Path(self.source).resolve().parent if self.source != "defaults" else Path.cwd()
        return [str((base / p).resolve()) for p in self.data["jobs"]["path"]]

    def options(self, job: str) -> dict[str, Any]:
        return dict(self.data.get("options", {}).get(job, {}))

    def describe(self) -> dict[str, dict[str, Any]]:
        """The settings with secrets redacted, for logs and ``swarm config check``."""
        out = copy.deepcopy({k: dict(v) for k, v in self.data.items()})
        for dotted in URLS:
            section, key = dotted.split(".")
            out[section][key] = redact(out[section][key])
        for dotted in URL_LISTS:
            section, key = dotted.split(".")
            out[section][key] = [redact(url) for url in out[section][key]]
        for section, key in SECRETS:
            if out[section][key]:
                out[section][key] = "***"
        return out


def load(path: str | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the file (``path``, else ``swarm.toml`` if present), then env, then ``overrides``."""
    env = os.environ if env is None else env
    data = copy.deepcopy(DEFAULTS)
    data["options"] = {}
    source = "defaults"
    origins: dict[str, str] = {}
    file = Path(path) if path else Path("swarm.toml")
    if path or file.exists():
        _merge_file(data, file, origins)
        source = str(file)
    _merge_env(data, env, origins)
    for dotted, value in (overrides or {}).items():
        section, key = dotted.split(".", 1)
        data[section][key] = _coerce(f"{section}.{key}", value, DEFAULTS[section][key])
        origins[dotted] = "an override"
    cfg = Config(data, source, origins)
    _check_urls(cfg)
    _apply_password_files(data["backends"])
    if data["log"]["format"] not in LOG_FORMATS:
        raise ConfigError(f"log.format must be one of {', '.join(LOG_FORMATS)}, got {data['log']['format']!r}")
    split = data["split"]
    for key, least in (("ways", 2), ("tail", 1), ("min_rows", 0)):
        if split[key] < least:
            raise ConfigError(f"split.{key} must be {least} or more, got {split[key]}")
    for key in ("jobs.max_queue", "master.window"):
        section, name = key.split(".")
        if data[section][name] < 0:
            raise ConfigError(f"{key} must be 0 or more, got {data[section][name]}")
    deadline = data["master"]["deadline"]
    if deadline and not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", deadline):
        raise ConfigError(f"master.deadline must be a time of day HH:MM, got {deadline!r}")
    return cfg


def _check_urls(cfg: Config) -> None:
    """Each URL setting's scheme, and that its password (if any) is percent-encoded."""
    for dotted in URLS:
        section, key = dotted.split(".")
        url, file_key = cfg[section][key], PASSWORD_FILES.get(key)
        check_credentials(dotted, url, cfg.origin(dotted), f"backends.{file_key}" if file_key else None)
        if section == "backends":
            check_url(dotted, url)
    for dotted in URL_LISTS:
        section, key = dotted.split(".")
        for url in cfg[section][key]:
            check_credentials(dotted, url, cfg.origin(dotted), None)


def _apply_password_files(backends: dict[str, Any]) -> None:
    """Put each password file's content into its URL, which must not hold a password already."""
    for role, file_key in PASSWORD_FILES.items():
        path = backends[file_key]
        if not path:
            continue
        url = backends[role]
        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError as exc:
            raise ConfigError(f"backends.{role}: cannot parse {redact(url)} ({exc})") from None
        if parts.password is not None:
            raise ConfigError(f"backends.{role} has a password and backends.{file_key} is set: use one or the "
                              f"other (in {redact(url)})")
        if not parts.username:
            raise ConfigError(f"backends.{file_key} is set but backends.{role} names no user for the password: "
                              f"add one, as in {parts.scheme}://swarm@host/... (in {redact(url)})")
        backends[role] = with_password(url, _read_password(f"backends.{file_key}", path))


def _read_password(key: str, path: str) -> str:
    """The password in file ``path``: its content without the trailing newline."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{key}: {path} is empty")
    return password


def _merge_file(data: dict, file: Path, origins: dict[str, str]) -> None:
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    for section, values in raw.items():
        if section in FREE_SECTIONS:
            _check_free(section, values, file)
            data[section] = values
            origins.update({f"{section}.{job}.{key}": "file" for job, table in values.items() for key in table})
            continue
        if section not in DEFAULTS:
            raise ConfigError(f"unknown section [{section}] in {file}; known: {', '.join([*DEFAULTS, *FREE_SECTIONS])}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {file} must be a table")
        for key, value in values.items():
            if key not in DEFAULTS[section]:
                raise ConfigError(f"unknown key {section}.{key} in {file}; known: {', '.join(DEFAULTS[section])}")
            if (section, key) in SECRETS:
                variable = f"SWARM_{section.upper()}_{key.upper()}"
                raise ConfigError(f"{section}.{key} cannot be written in {file}: put the key in a file of its own "
                                  f"(mode 0600) and set {section}.{key}_file, or set {variable}")
            data[section][key] = _coerce(f"{section}.{key}", value, DEFAULTS[section][key])
            origins[f"{section}.{key}"] = "file"


def _check_free(section: str, values: Any, file: Path) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] in {file} must be a table of per-job tables")
    for job, table in values.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{section}.{job} in {file} must be a table, [{section}.{job}], "
                              f"got {type(table).__name__}")


def _merge_env(data: dict, env: Mapping[str, str], origins: dict[str, str]) -> None:
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        if name.startswith(f"{ENV_PREFIX}OPTIONS_"):
            job, key = _env_option(name)
            data["options"].setdefault(job, {})[key] = _option_value(value)
            origins[f"options.{job}.{key}"] = name
            continue
        section, key = _env_setting(name)
        default = DEFAULTS[section][key]
        data[section][key] = _coerce(f"{section}.{key} (from {name})", _parse_env(value, default), default)
        origins[f"{section}.{key}"] = name


def _env_option(name: str) -> tuple[str, str]:
    """The job and key ``SWARM_OPTIONS__<JOB>__<KEY>`` sets, lower-cased."""
    parts = name[len(OPTIONS_ENV_PREFIX):].split("__") if name.startswith(OPTIONS_ENV_PREFIX) else []
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"environment variable {name}: a job option is set as SWARM_OPTIONS__<JOB>__<KEY>, "
                          f"with two underscores before the job and before the key, as in "
                          f"SWARM_OPTIONS__MERCHANT_DAILY__CHUNKS")
    job, key = parts
    return job.lower(), key.lower()


def _option_value(text: str) -> Any:
    """``text`` as a TOML value (``8``, ``true``, ``"text"``, ``[1, 2]``) when it is exactly one, else as text."""
    try:
        doc = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return doc["value"] if doc.keys() == {"value"} else text  # "1\nother = 2" is text, not two keys


def _env_setting(name: str) -> tuple[str, str]:
    """The section and key a ``SWARM_*`` variable sets; ``ConfigError`` naming it when it sets none."""
    sections = [s for s in DEFAULTS if name.startswith(f"{ENV_PREFIX}{s.upper()}_")]
    for section in sections:
        key = name[len(f"{ENV_PREFIX}{section.upper()}_"):].lower()
        if key in DEFAULTS[section]:
            return section, key
    if sections:
        section = sections[0]
        key = name[len(f"{ENV_PREFIX}{section.upper()}_"):].lower()
        raise ConfigError(f"environment variable {name} names unknown key {section}.{key}{_closest(name)}; "
                          f"known keys of [{section}]: {', '.join(DEFAULTS[section])}")
    raise ConfigError(f"environment variable {name} names no Swarm setting{_closest(name)}; settings are "
                      f"SWARM_<SECTION>_<KEY>, sections {', '.join(DEFAULTS)}, and job options "
                      f"SWARM_OPTIONS__<JOB>__<KEY>; the only other SWARM_ variables allowed are "
                      f"{', '.join(ENV_NOT_SETTINGS)}")


def _closest(name: str) -> str:
    """`` (did you mean X?)`` for the known variable nearest ``name``, or nothing."""
    known = [f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, keys in DEFAULTS.items() for k in keys]
    match = difflib.get_close_matches(name.upper(), [*known, *ENV_NOT_SETTINGS], n=1, cutoff=0.75)
    return f" (did you mean {match[0]}?)" if match else ""


def _parse_env(text: str, default: Any) -> Any:
    if isinstance(default, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(default, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    return text


def _coerce(key: str, value: Any, default: Any) -> Any:
    """``value`` as the type of ``default``, or ``ConfigError`` naming ``key``."""
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            result = float(value)
            if result < 0:
                raise ValueError
            return result
        if isinstance(default, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError
            return value
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        shown = redact(value) if isinstance(value, str) else repr(value)
        if any(key.startswith(f"{section}.{name}") for section, name in SECRETS):
            shown = "***"
        raise ConfigError(f"{key} must be {type(default).__name__}, got {shown!r}") from None
