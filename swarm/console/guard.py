"""Every action's checks: the console is writable, the caller logged in (or shows the token), the form
carries the session's CSRF token, and the request comes from the console's own pages.

A route that changes anything reads its form through ``action_form`` and
nothing else; ``tests/unit/console`` posts to every such route without each
of these and expects a refusal.
"""
from __future__ import annotations

import hmac
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from swarm.console.auth import Guard

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FORM_BYTES = 64 * 1024  # an action's form is a few fields; anything bigger is not one of ours
READ_ONLY = ("the console is read-only: its config names no users and no token "
             "(console.users_file, console.token_file)")


@dataclass(frozen=True)
class Actor:
    """Who takes an action: a user's name, or ``token``."""

    name: str

    def holder(self) -> str:
        """How the ledger's lock and the logs name an action of this actor's."""
        return f"swarm ui ({self.name})"


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; every form of the console carries it."""
    token = request.session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def logged_in(request: Request) -> str | None:
    user = request.session.get("user")
    return user if isinstance(user, str) else None


async def action_form(request: Request, guard: Guard) -> tuple[FormData, Actor]:
    """The form of an action and who takes it, or a 403 (413) that names what was missing."""
    if not guard.writable:
        raise HTTPException(403, READ_ONLY)
    _same_origin(request)
    _small(request)
    by_token = guard.bearer(request.headers.get("authorization"))
    form = await request.form(max_files=0, max_fields=200)
    if by_token:  # a header no other site can make a browser send: no CSRF token needed
        return form, Actor(by_token)
    user = logged_in(request)
    if user is None:
        raise HTTPException(403, "log in first: actions need a user or the token (nothing was changed)")
    if not _csrf_matches(request, str(form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or "")):
        raise HTTPException(403, "the form's CSRF token is missing or stale: reload the page and try again "
                                 "(nothing was changed)")
    return form, Actor(user)


async def login_form(request: Request) -> FormData:
    """The login form: its own origin and CSRF token (no one else's page may log a browser in)."""
    _same_origin(request)
    _small(request)
    form = await request.form(max_files=0, max_fields=10)
    if not _csrf_matches(request, str(form.get(CSRF_FIELD) or "")):
        raise HTTPException(403, "the login form is stale: reload the page and try again")
    return form


def _csrf_matches(request: Request, sent: str) -> bool:
    """Whether ``sent`` is the session's CSRF token (compared in constant time)."""
    expected = request.session.get(CSRF_FIELD)
    return isinstance(expected, str) and hmac.compare_digest(sent.encode(), expected.encode())


def _small(request: Request) -> None:
    length = request.headers.get("content-length")
    if length is None or not length.isdigit() or int(length) > MAX_FORM_BYTES:
        raise HTTPException(413, f"an action's form is at most {MAX_FORM_BYTES} bytes, with a Content-Length")


def _same_origin(request: Request) -> None:
    """Browsers send Origin on a POST: one that is not this console's own host is refused."""
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site POST: the CSRF token or the bearer token still decides
        return
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    if urllib.parse.urlsplit(origin).netloc != host:
        raise HTTPException(403, "a request from another site's page is refused (nothing was changed)")


# Scripts and styles only from the console's own files: a handler's error that slipped through escaping
# still could not run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")  # pages show the night as it is now: never from a cache


class SecurityHeaders:
    """ASGI middleware: the headers above on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                names = {name for name, _ in headers}
                headers += [(name, value) for name, value in HEADERS if name not in names]
                if "/static/" not in scope["path"] and NO_STORE[0] not in names:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
