"""What every page of the console shares: the backends a request opens, rendering, and who acted."""
from __future__ import annotations

import contextlib
import logging
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import jinja2
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse

from swarm.config import Config
from swarm.console.auth import Guard
from swarm.console.guard import READ_ONLY, Actor, csrf_token, logged_in
from swarm.console.launch import Launcher

HERE = Path(__file__).parent
REFRESH_SECONDS = 2  # how often a running run's page re-reads its live part
RUNS_SHOWN = 100
NAV = (("runs", "Runs"), ("dead-letters", "Dead letters"), ("reruns", "Reruns"), ("held", "Held runs"),
       ("fleet", "Fleet"))
log = logging.getLogger("swarm.console")


@dataclass(frozen=True)
class Backends:
    """How a request opens what it reads: the ledger, the broker (None: in process), a job, the tables.

    ``swarm ui`` passes the ``swarm`` command's own openers, so the console
    sees exactly the backends and jobs every other command of the site sees.
    """

    open_ledger: Callable[[], Any]
    open_broker: Callable[[], Any]
    job: Callable[[str], Any]
    tables: Callable[[], Any]
    in_process: bool

    @contextlib.contextmanager
    def ledger(self) -> Iterator[Any]:
        ledger = self.open_ledger()
        try:
            yield ledger
        finally:
            ledger.close()

    @contextlib.contextmanager
    def broker(self) -> Iterator[Any]:
        """The broker, or None for the in-process one (its queues live in another process, if any)."""
        if self.in_process:
            yield None
            return
        broker = self.open_broker()
        try:
            yield broker
        finally:
            broker.close()


class Core:
    """The config, backends, guard and launcher of one console, and the rendering of its pages."""

    def __init__(self, cfg: Config, guard: Guard, backends: Backends, launcher: Launcher | None = None):
        self.cfg, self.guard, self.backends = cfg, guard, backends
        self.settings = cfg["console"]
        self.launcher = launcher or Launcher(cfg)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                                      undefined=jinja2.StrictUndefined)
        self.env.filters["url"] = quote

    def page(self, request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        """``template`` rendered with ``values`` and what every page shows (who is logged in, the CSRF token)."""
        base = request.scope.get("root_path", "").rstrip("/")
        context = {"base": base, "user": logged_in(request), "writable": self.guard.writable,
                   "csrf": csrf_token(request), "nav": NAV, "refresh": REFRESH_SECONDS, "read_only": READ_ONLY,
                   "section": values.pop("section", ""), **values}
        return HTMLResponse(self.env.get_template(template).render(context), status_code=code)

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        """A 303 to ``path`` under the console's prefix: after an action, the page that shows its effect."""
        return RedirectResponse(request.scope.get("root_path", "").rstrip("/") + path, status_code=303)


class Pages:
    """A group of pages: what they share comes from ``core``."""

    def __init__(self, core: Core):
        self.core = core
        self.backends, self.guard, self.launcher, self.settings = (core.backends, core.guard, core.launcher,
                                                                    core.settings)

    def page(self, request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
        return self.core.page(request, template, code, **values)

    def redirect(self, request: Request, path: str) -> RedirectResponse:
        return self.core.redirect(request, path)


def quote(value: Any) -> str:
    """``value`` for a URL's query, every reserved character escaped."""
    return urllib.parse.quote(str(value), safe="")


def number(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise HTTPException(400, f"{name}: expected a number, got {text[:40]!r}") from None


def log_action(actor: Actor, what: str) -> None:
    """Every action, in the console's log: who, from which host, what."""
    log.info("%s on %s: %s", actor.name, socket.gethostname(), what)
