"""Logging in (a user's password, or the token) and out."""
from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from swarm.console.core import Pages
from swarm.console.guard import READ_ONLY, login_form


class LoginPages(Pages):
    def routes(self) -> list[Route]:
        return [Route("/login", self.login_page), Route("/login", self.login, methods=["POST"]),
                Route("/logout", self.logout, methods=["POST"])]

    def login_page(self, request: Request) -> Response:
        return self.page(request, "login.html", error="")

    async def login(self, request: Request) -> Response:
        form = await login_form(request)
        if not self.guard.writable:
            return self.page(request, "login.html", 403, error=READ_ONLY)
        name, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
        who = await run_in_threadpool(self.guard.login, name, password)
        if who is None:
            return self.page(request, "login.html", 403, error="Wrong user name, password or token.")
        request.session.clear()  # a new session: no one can fix a session id before the login
        request.session["user"] = who
        request.session["csrf"] = secrets.token_urlsafe(32)
        return self.redirect(request, "/runs")

    async def logout(self, request: Request) -> Response:
        await login_form(request)
        request.session.clear()
        return self.redirect(request, "/runs")
