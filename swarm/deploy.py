"""Render a host's supervisord config for the worker fleet from the Swarm config.

The workers' environment carries the resolved settings as ``SWARM_*``
variables, backend URLs included, because supervisord hands them to each
process: the rendered file holds passwords and is written with mode 0600.
supervisord's control socket (or port) asks for a user and password: those
of ``autoscale.supervisor_url`` when it carries them, else generated once
and kept by later renders of the same file.
``[options.<job>]`` tables are not rendered as variables, so a config file,
when there is one, is also passed with ``--config``.
"""
from __future__ import annotations

import configparser
import dataclasses
import math
import os
import pwd
import re
import secrets
import sys
import urllib.parse
from pathlib import Path
from typing import Mapping

from swarm.config import PASSWORD_FILES, SECRETS, Config
from swarm.errors import ConfigError
from swarm.urls import redact, without_password

WORKER_SECTIONS = ("backends", "jobs", "worker", "security", "log")
AUTOSCALE_PROGRAM = "swarm-autoscale"
LOG_MAXBYTES, LOG_BACKUPS = "50MB", 10
START_SECS, START_RETRIES = 3, 5  # a worker waits for its broker, so quick exits mean bad config
UMASK = "027"  # logs and the socket readable by the service's group, nobody else
CONTROL_USER = "swarm"  # supervisord's control user when neither the URL nor --user names one
_UNSAFE = re.compile(r'["\r\n]|\s[;#]')  # what supervisord's environment syntax cannot carry


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where things go on the host, and how many workers it runs."""

    processes: int
    log_dir: str = "/var/log/swarm"
    run_dir: str = "/run/swarm"
    user: str | None = None  # run the programs as this user (supervisord running as root)
    autoscale: bool = False  # add the autoscaler program; it starts the workers
    python: str = sys.executable
    extra_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    secrets: bool = True  # False: passwords as ***, for showing the file rather than using it
    control_password: str | None = None  # supervisord's from an earlier render, kept (see previous_password)


def render(cfg: Config, layout: Layout) -> str:
    """The whole supervisord config, as text."""
    _check_fleet(cfg, layout)
    server = _Server.parse(cfg["autoscale"]["supervisor_url"], layout)
    parts = [_header(cfg), _supervisord(layout), *server.sections(layout.user), _rpcinterface(),
             _worker_program(cfg, layout)]
    if layout.autoscale:
        parts.append(_autoscale_program(cfg, layout, server))
    return "\n".join(parts)


def write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write ``text`` to ``path`` readable by its owner only: it holds backend passwords.

    ``owner``: when run as root, the file becomes that user's; supervisord,
    running as that user, reads it again on ``supervisorctl update``.
    """
    uid_gid = _ids(owner) if owner and os.geteuid() == 0 else None
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode through O_CREAT
        if uid_gid:
            os.fchown(out.fileno(), *uid_gid)
        out.write(text)


def previous_password(path: Path) -> str | None:
    """The control password an earlier render wrote to ``path``, if any.

    Kept across renders: a running supervisord keeps the password it
    started with, so ``supervisorctl update`` must still present that one.
    """
    parser = configparser.RawConfigParser(strict=False)
    try:
        parser.read(path)
    except (OSError, configparser.Error):
        return None
    password = parser.get("supervisorctl", "password", fallback=None)
    return password.replace("%%", "%") if password else None


def _ids(user: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise ConfigError(f"--user {user}: no such user on this host") from None
    return entry.pw_uid, entry.pw_gid


def settings_env(cfg: Config, sections: tuple[str, ...]) -> dict[str, str]:
    """``SWARM_<SECTION>_<KEY>`` variables for every setting of ``sections``.

    A URL whose password comes from a file goes without it: each process reads the file itself,
    and the password stays out of the rendered config.
    """
    env = {}
    for section in sections:
        for key, value in cfg[section].items():
            if (section, key) in SECRETS and not value:
                continue  # not set: nothing to carry, and an empty key is no key
            file_key = PASSWORD_FILES.get(key) if section == "backends" else None
            if file_key and cfg[section][file_key]:
                value = without_password(value)
            if (section, key) == ("jobs", "path"):
                value = cfg.job_path()  # from the config file's directory, whatever the program's own
            env[f"SWARM_{section.upper()}_{key.upper()}"] = _env_text(value)
    return env


def _env_text(value: object) -> str:
    """A setting as ``config._parse_env`` reads it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def _check_fleet(cfg: Config, layout: Layout) -> None:
    if cfg["backends"]["broker"].startswith("memory:"):
        raise ConfigError("backends.broker: a fleet of worker processes needs a shared broker (amqp://...), "
                          "not memory://")
    if not cfg["worker"]["job"]:
        raise ConfigError("worker.job: the fleet needs a job to serve (set worker.job or SWARM_WORKER_JOB)")
    if layout.processes < 1:
        raise ConfigError(f"--processes must be at least 1, got {layout.processes}")
    if layout.autoscale and layout.processes < cfg["autoscale"]["max"]:
        raise ConfigError(f"autoscale.max is {cfg['autoscale']['max']} but the program would have only "
                          f"{layout.processes} processes; raise --processes or lower autoscale.max")


def _header(cfg: Config) -> str:
    return (
        f"; supervisord config for a Swarm worker host, rendered by `swarm deploy supervisord`\n"
        f"; from {cfg.source}. Re-render after changing the Swarm config: the environment\n"
        f"; below overrides the config file.\n"
        f"; It holds the backend URLs with their passwords, and supervisord's control\n"
        f"; password: keep it mode 0600.\n"
    )


def _supervisord(layout: Layout) -> str:
    return _section("supervisord", {
        "logfile": f"{layout.log_dir}/supervisord.log",
        "pidfile": f"{layout.run_dir}/supervisord.pid",
        "childlogdir": layout.log_dir,
        # Started as root, supervisord becomes this user before it opens a log or its socket.
        "user": layout.user,
        # Applied only when supervisord daemonizes; under systemd (--nodaemon) the unit's UMask= does it.
        "umask": UMASK,
    })


def _rpcinterface() -> str:
    # The XML-RPC interface `supervisorctl` and `swarm autoscale` use.
    return _section("rpcinterface:supervisor",
                    {"supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"})


@dataclasses.dataclass(frozen=True)
class _Server:
    """supervisord's control server, from ``autoscale.supervisor_url``, always with a user and password."""

    url: str  # without the credentials
    username: str
    password: str
    socket: str | None = None
    port: str | None = None

    @classmethod
    def parse(cls, url: str, layout: Layout) -> "_Server":
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError:
            raise ConfigError("autoscale.supervisor_url: expected unix:///path/to.sock or http://host:port") from None
        user, password = (urllib.parse.unquote(p) if p else p for p in (parts.username, parts.password))
        user = user or layout.user or CONTROL_USER
        password = password or layout.control_password or secrets.token_urlsafe(24)
        if not layout.secrets:
            password = "***"
        if parts.scheme == "unix":
            if parts.netloc.rpartition("@")[2] or not parts.path.startswith("/"):
                raise ConfigError(f"autoscale.supervisor_url: a socket path must be absolute, as in "
                                  f"unix:///run/swarm/supervisor.sock; got {redact(url)!r}")
            return cls(f"unix://{parts.path}", user, password, socket=parts.path)
        if parts.scheme != "http" or not parts.hostname or not port:
            raise ConfigError("autoscale.supervisor_url: expected unix:///path/to.sock or http://host:port")
        return cls(f"http://{parts.hostname}:{port}", user, password, port=f"{parts.hostname}:{port}")

    def authed_url(self) -> str:
        """The URL with the user and password, as the autoscaler is given it."""
        scheme, _, rest = self.url.partition("://")
        userinfo = ":".join(urllib.parse.quote(p, safe="*") for p in (self.username, self.password))
        return f"{scheme}://{userinfo}@{rest}"

    def sections(self, user: str | None) -> list[str]:
        auth = {"username": self.username, "password": self.password}
        if self.socket:
            # The service's group may connect (still with the password); nobody else.
            server = _section("unix_http_server", {"file": self.socket, "chmod": "0770", "chown": user, **auth})
        else:
            server = _section("inet_http_server", {"port": self.port, **auth})
        return [server, _section("supervisorctl", {"serverurl": self.url, **auth})]


def _worker_program(cfg: Config, layout: Layout) -> str:
    group = cfg["autoscale"]["group"]
    env = _env(cfg, WORKER_SECTIONS, layout)
    env["SWARM_WORKER_METRICS_PORT"] = _metrics_port(cfg["worker"]["metrics_port"], layout.processes)
    return _section(f"program:{group}", {
        "command": _command(cfg, layout, "worker"),
        "process_name": _Raw("%(program_name)s-%(process_num)02d"),
        "numprocs": str(layout.processes),
        "directory": _directory(cfg),
        "user": layout.user,
        # Under the autoscaler the workers wait for it: it starts autoscale.min of them at once.
        "autostart": "false" if layout.autoscale else "true",
        "autorestart": "true",
        "startsecs": str(START_SECS),
        "startretries": str(START_RETRIES),
        "exitcodes": "0",
        # TERM makes a worker drain: it stops taking messages and finishes those in hand.
        "stopsignal": "TERM",
        "stopwaitsecs": str(math.ceil(cfg["worker"]["drain_seconds"])),
        "stopasgroup": "true",
        "killasgroup": "true",
        "redirect_stderr": "true",
        "stdout_logfile": _Raw(f"{_escape(layout.log_dir)}/%(program_name)s-%(process_num)02d.log"),
        "stdout_logfile_maxbytes": LOG_MAXBYTES,
        "stdout_logfile_backups": str(LOG_BACKUPS),
        "environment": _Raw(_environment(env)),
    })


def _autoscale_program(cfg: Config, layout: Layout, server: _Server) -> str:
    env = _env(cfg, (*WORKER_SECTIONS, "autoscale"), layout)
    env["SWARM_WORKER_METRICS_PORT"] = "0"
    env["SWARM_AUTOSCALE_SUPERVISOR_URL"] = server.authed_url()
    return _section(f"program:{AUTOSCALE_PROGRAM}", {
        "command": _command(cfg, layout, "autoscale"),
        "directory": _directory(cfg),
        "user": layout.user,
        "autostart": "true",
        "autorestart": "true",
        "startsecs": str(START_SECS),
        "startretries": str(START_RETRIES),
        "stopsignal": "TERM",
        "stopwaitsecs": "30",
        "redirect_stderr": "true",
        "stdout_logfile": f"{layout.log_dir}/{AUTOSCALE_PROGRAM}.log",
        "stdout_logfile_maxbytes": LOG_MAXBYTES,
        "stdout_logfile_backups": str(LOG_BACKUPS),
        "environment": _Raw(_environment(env)),
    })


def _env(cfg: Config, sections: tuple[str, ...], layout: Layout) -> dict[str, str]:
    env = settings_env(cfg, sections) | dict(layout.extra_env)
    if layout.secrets:
        return env
    hidden = {f"SWARM_{section.upper()}_{key.upper()}" for section, key in SECRETS}
    return {name: "***" if name in hidden else redact(value) for name, value in env.items()}


def _command(cfg: Config, layout: Layout, command: str) -> str:
    config = [] if cfg.source == "defaults" else ["--config", str(Path(cfg.source).resolve())]
    words = [layout.python, "-m", "swarm.cli", *config, command]
    bad = [w for w in words if not w or re.search(r"[\s\"'\\]", w)]
    if bad:
        raise ConfigError(f"cannot put {bad[0]!r} in a supervisord command: use a path without spaces or quotes")
    return " ".join(words)


def _directory(cfg: Config) -> str | None:
    """The config file's directory, so relative paths in it mean the same to every process."""
    return None if cfg.source == "defaults" else str(Path(cfg.source).resolve().parent)


def _metrics_port(port: int, processes: int) -> str:
    """Each process its own port: ``port`` + process number (supervisord cannot add, so it is spelled)."""
    if not port or processes == 1:
        return str(port)
    if port % 100 or processes > 100:
        raise ConfigError(f"worker.metrics_port: {processes} workers on one host need a port each; use a multiple "
                          f"of 100 (process N then listens on metrics_port + N), got {port}")
    return _Raw(f"{port // 100}%(process_num)02d")


class _Raw(str):
    """Text already in supervisord's syntax: its ``%(name)s`` expansions are meant."""


def _escape(text: str) -> str:
    return text if isinstance(text, _Raw) else text.replace("%", "%%")


def _environment(env: Mapping[str, str]) -> str:
    """supervisord's ``KEY="value",...`` one variable a line; refuses values it cannot carry."""
    lines = []
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ConfigError(f"environment variable name {name!r} is not valid")
        if _UNSAFE.search(value) or value[:1] == "'" or value[-1:] == "'":
            raise ConfigError(f"{name}: supervisord's environment cannot carry this value (a quote, a line break "
                              f"or a ';'/'#' after a space); set it in the config file instead")
        lines.append(f'{name}="{_escape(value)}"')
    return ",\n    ".join(lines)


def _section(name: str, values: Mapping[str, str | None]) -> str:
    lines = [f"[{name}]"]
    for key, value in values.items():
        if value is not None:
            lines.append(f"{key}={_escape(value)}")
    return "\n".join(lines) + "\n"
