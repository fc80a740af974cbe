"""The console's Starlette application: its pages (``swarm.console.pages``), sessions and security headers.

Pages are server-rendered Jinja2 templates (every value escaped); the
parts of a running run's page that move are re-read by htmx every few
seconds, and its throughput plot by the console's own script. Reads open
the ledger (and the broker, for queue depths) per request; actions go
through ``guard.action_form`` and start the same ``swarm`` commands an
operator would type (``launch``), or call the library functions behind them.
"""
from __future__ import annotations

from typing import Any, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from swarm.config import Config
from swarm.console.auth import Guard
from swarm.console.core import HERE, Backends, Core
from swarm.console.guard import SecurityHeaders
from swarm.console.launch import Launcher
from swarm.console.pages.dead_letters import DeadLetterPages
from swarm.console.pages.fleet import FleetPage
from swarm.console.pages.held import HeldPages
from swarm.console.pages.login import LoginPages
from swarm.console.pages.reruns import RerunPages
from swarm.console.pages.runs import RunPages

PAGES = (RunPages, DeadLetterPages, RerunPages, HeldPages, FleetPage, LoginPages)
# Routes that change something; tests/unit/console posts to each without a login, a token or a CSRF token.
ACTIONS = ("/run/resume", "/dead-letters/replay", "/reruns/start", "/held/decide")
TITLES = {403: "Refused", 404: "Not found", 413: "Too large", 429: "Busy"}


def build(cfg: Config, guard: Guard, session_key: str, backends: Backends,
          launcher: Launcher | None = None) -> Starlette:
    """The console's ASGI application."""
    core = Core(cfg, guard, backends, launcher)
    settings = cfg["console"]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(SessionMiddleware, secret_key=session_key, session_cookie="swarm_console",
                   max_age=int(float(settings["session_hours"]) * 3600), same_site="strict",
                   https_only=bool(settings["secure_cookies"])),
    ]
    return Starlette(routes=routes(core), middleware=middleware, exception_handlers={HTTPException: _error_page(core)})


def routes(core: Core) -> list[BaseRoute]:
    found: list[BaseRoute] = [Route("/", lambda r: core.redirect(r, "/runs")),
                              Route("/healthz", lambda r: Response("ok\n", media_type="text/plain"))]
    for pages in PAGES:
        found += pages(core).routes()
    found.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    return found


def _error_page(core: Core) -> Callable[[Request, Exception], Any]:
    def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return core.page(request, "message.html", exc.status_code, title=TITLES.get(exc.status_code, "Error"),
                         text=str(exc.detail))
    return handle
