"""``swarm ui``: the web console (``swarm.console``), and ``swarm ui --add-user`` for who may act in it."""
from __future__ import annotations

import argparse
import getpass
import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from swarm.config import Config
from swarm.errors import ConfigError
from swarm.exits import EXIT_OK

log = logging.getLogger("swarm.console")


def register(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    u = sub.add_parser("ui", help="the web console (console.bind:console.port, 127.0.0.1:8080 by default); "
                                  "read-only unless console.users_file or console.token_file names who may act")
    u.add_argument("--bind", help="the address to listen on (default console.bind)")
    u.add_argument("--port", type=int, help="the port (default console.port)")
    u.add_argument("--add-user", metavar="NAME",
                   help="add NAME to console.users_file, or change its password (read from standard input), "
                        "and exit")
    u.set_defaults(func=ui)


def ui(args: argparse.Namespace, cfg: Config) -> int:
    settings = cfg["console"]
    if args.add_user:
        return _add_user(args.add_user, str(settings["users_file"]))
    try:
        import uvicorn

        from swarm.console.app import build
    except ImportError as exc:
        raise ConfigError(f"swarm ui needs the console's packages ({exc.name} is missing): "
                          f"pip install 'swarm[console]'") from None
    from swarm.console.auth import load_guard

    guard = load_guard(settings)
    app = build(cfg, guard, _session_key(str(settings["session_key_file"])), backends(cfg))
    bind, port = args.bind or str(settings["bind"]), args.port if args.port is not None else int(settings["port"])
    _say_how(bind, port, guard)
    uvicorn.run(app, host=bind, port=port, root_path=str(settings["root_path"]), proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", log_config=None, access_log=False, timeout_graceful_shutdown=5)
    return EXIT_OK


def backends(cfg: Config) -> Any:
    """The console's openers: the same as every other command's (``kit``)."""
    from swarm.commands import kit
    from swarm.console.core import Backends

    return Backends(open_ledger=lambda: kit.ledger(cfg), open_broker=lambda: kit.broker(cfg),
                    job=lambda name: kit.job(cfg, name), tables=lambda: kit.tables(cfg),
                    in_process=kit.in_process(cfg))


def _say_how(bind: str, port: int, guard: object) -> None:
    from swarm.console.auth import Guard

    assert isinstance(guard, Guard)
    who = (f"{len(guard.users)} user(s)" + (" and the token" if guard.token else "")) if guard.users else (
        "the token" if guard.token else "")
    mode = f"actions by {who}" if guard.writable else "read-only (no console.users_file or console.token_file)"
    log.info("console on http://%s:%d/: %s", bind if ":" not in bind else f"[{bind}]", port, mode)
    if not _loopback(bind):
        log.warning("the console listens on %s, beyond this host: serve it over HTTPS through a reverse proxy "
                    "and set console.secure_cookies (README: The web console)", bind)


def _loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind == "localhost"


def _session_key(path: str) -> str:
    from swarm.console.auth import new_secret, read_token

    if not path:
        return new_secret()  # sessions end when the console restarts
    return read_token(Path(path))


def _add_user(name: str, users_file: str) -> int:
    from swarm.console.auth import add_user

    if not users_file:
        raise ConfigError("console.users_file is not set: name the file the console's users go in")
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing was changed")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    add_user(Path(users_file), name, password)
    print(f"{name} can log in to the console ({users_file}); a running console reads it at its next start")
    return EXIT_OK
