"""Headless Chromium for the web console's tests, driven by Playwright.

The browser is Debian's ``chromium`` package (``/usr/bin/chromium``, installed by ``deploy/dev/services.sh``;
``SWARM_CHROMIUM``, read as the tests start, names another executable), never a browser build downloaded by a
test tool. It is launched once per session (``chromium_session``; a test asks for ``chromium``); each test gets a
context of its own (``browser_context``: fresh cookies, storage and cache) and a ``page`` in it, whose uncaught
JavaScript exceptions fail the test at teardown, named.

The fixtures are a plugin of the root ``tests/conftest.py``, so any test module can ask for them by name without
importing them (importing them into a module would give that module a browser of its own); ``screenshot`` is
imported::

    from tests.support.browser import screenshot

    def test_jobs_page(page, page_log, console_url):
        page.goto(console_url)
        screenshot(page, "jobs")              # tests/artifacts/screenshots/jobs.png
        assert page_log.failed_requests == []

A test that makes a page throw on purpose takes the error off the list, and so out of the teardown check, with
``page_log.expect_page_error(pattern)``. Every test that uses ``chromium`` is marked ``browser``.
"""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Response, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from tests.support import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ENV = "SWARM_CHROMIUM"
# The machines reach only their package registries: Chromium's own calls home (field trials, component and
# safe-browsing updates, sync) are turned off rather than left to be refused. --no-sandbox because tests run as
# root; --disable-dev-shm-usage because a container's /dev/shm may be too small for the renderer.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
VIEWPORT = {"width": 1280, "height": 800}
TIMEOUT_MS = 10_000  # Playwright's default of 30 s makes a broken page slow to report
SCREENSHOTS = ROOT / "tests" / "artifacts" / "screenshots"


# Taken out of the environment as the tests start: Swarm refuses a SWARM_* variable that is not one of its
# settings (swarm/config.py), and the tests run `swarm` in-process and as child processes.
_CHROMIUM_FROM_ENV = os.environ.pop(CHROMIUM_ENV, None)


def chromium_executable() -> str:
    """The Chromium the tests drive: ``SWARM_CHROMIUM`` if it was set when the tests started, else Debian's."""
    return _CHROMIUM_FROM_ENV or CHROMIUM


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "chromium_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def chromium_session() -> Iterator[Browser]:
    """One headless Chromium for the whole session (Playwright gives it a temporary profile, removed at close).
    Tests ask for ``chromium`` (or ``browser_context``, ``page``), not for this."""
    global _loop
    path = chromium_executable()
    if not os.access(path, os.X_OK):
        if _CHROMIUM_FROM_ENV:
            pytest.fail(f"{CHROMIUM_ENV}={path} is not an executable Chromium", pytrace=False)
        pytest.fail(f"no Chromium at {path}: the browser tests drive Debian's package `chromium`; "
                    f"`bash deploy/dev/services.sh` installs it (`make test` runs it), "
                    f"or {CHROMIUM_ENV} names another executable", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True, args=list(CHROMIUM_ARGS))
        _loop = asyncio._get_running_loop()
        assert _loop is not None, "Playwright's sync API no longer leaves its loop running between calls"
        _hide_loop()
        try:
            yield browser
        finally:
            _show_loop()
            browser.close()


@pytest.fixture
def chromium(chromium_session: Browser) -> Iterator[Browser]:
    """The session's Chromium, for one test."""
    _show_loop()
    try:
        yield chromium_session
    finally:
        _hide_loop()


# Playwright's sync API leaves its event loop marked as running in this thread from one call to the next, so
# while the session's browser is up another test's asyncio.run() would fail ("cannot be called from a running
# event loop"). The loop is marked so only during the tests that use the browser, and for its close.
_loop: asyncio.AbstractEventLoop | None = None


def _hide_loop() -> None:
    asyncio._set_running_loop(None)


def _show_loop() -> None:
    asyncio._set_running_loop(_loop)


@pytest.fixture
def browser_context(chromium: Browser) -> Iterator[BrowserContext]:
    """A context of the test's own: no cookie, storage or cache from another test."""
    context = chromium.new_context(viewport=VIEWPORT)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context
    finally:
        context.close()


class PageLog:
    """What went wrong in a test's pages: uncaught exceptions, console errors, failed requests to the app.

    ``page_errors`` are the uncaught JavaScript exceptions (each its stack, or ``name: message``) and pages that
    crashed; ``console_errors`` the console's error messages, with where they were logged; ``failed_requests``
    the requests to ``origin`` that failed or were answered 400 or over (``GET URL: 404 Not Found``,
    ``GET URL: net::ERR_CONNECTION_REFUSED``). ``origin`` is that of the first page a test's page loads unless
    the test sets it (``http://127.0.0.1:8080``); requests elsewhere are not recorded.
    """

    def __init__(self) -> None:
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.origin: str | None = None
        self._pages: list[Page] = []
        self._answered: list[Request] = []  # recorded with their error status: Chromium then aborts some too

    def attach(self, page: Page) -> None:
        """Record what happens in ``page`` (the ``page`` fixture attaches every page of its context)."""
        if any(known is page for known in self._pages):
            return
        self._pages.append(page)
        page.on("pageerror", lambda error: self.page_errors.append(error.stack or f"{error.name}: {error.message}"))
        page.on("crash", lambda crashed: self.page_errors.append(f"the page crashed: {crashed.url}"))
        page.on("console", self._on_console)
        page.on("request", lambda request: self._on_request(page, request))
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)

    def expect_page_error(self, pattern: str, timeout: float = 5.0) -> str:
        """Take the first page error matching ``pattern`` (``re.search``) off ``page_errors`` and return it,
        waiting up to ``timeout`` seconds for it; fail the test, naming those there are, if none comes."""
        deadline = time.monotonic() + timeout
        while True:
            for index, error in enumerate(self.page_errors):
                if re.search(pattern, error):
                    return self.page_errors.pop(index)
            if time.monotonic() >= deadline or not self._pages:
                break
            self._pages[0].wait_for_timeout(50)  # lets Playwright deliver the page's events
        pytest.fail(f"no page error matching {pattern!r} within {timeout} s; {self._describe()}", pytrace=False)

    def assert_no_page_errors(self) -> None:
        """Fail the test, naming them, if any uncaught exception was left in ``page_errors``."""
        if self.page_errors:
            pytest.fail(f"uncaught JavaScript exception in the page; {self._describe()}", pytrace=False)

    def _describe(self) -> str:
        parts = []
        for title, entries in (("page errors", self.page_errors), ("console errors", self.console_errors),
                               (f"failed requests to {self.origin}", self.failed_requests)):
            if entries:
                parts.append(f"{title}:\n" + "\n".join(f"  {entry}" for entry in entries))
        return "\n".join(parts) if parts else "no page error, console error or failed request"

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location
            self.console_errors.append(f"{message.text} ({where.get('url')}:{where.get('lineNumber')})")

    def _on_request(self, page: Page, request: Request) -> None:
        if self.origin is None and request.is_navigation_request() and request.frame == page.main_frame:
            origin = _origin(request.url)
            if origin.startswith(("http://", "https://")):
                self.origin = origin

    def _on_request_failed(self, request: Request) -> None:
        answered = any(known is request for known in self._answered)
        if not answered and self.origin is not None and _origin(request.url) == self.origin:
            self.failed_requests.append(f"{request.method} {request.url}: {request.failure}")

    def _on_response(self, response: Response) -> None:
        if response.status >= 400 and self.origin is not None and _origin(response.url) == self.origin:
            self._answered.append(response.request)
            self.failed_requests.append(f"{response.request.method} {response.url}: "
                                        f"{response.status} {response.status_text}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture
def page_log() -> PageLog:
    """The record of the test's pages; see ``PageLog``."""
    return PageLog()


@pytest.fixture
def page(browser_context: BrowserContext, page_log: PageLog) -> Iterator[Page]:
    """A page in the test's own context, recorded in ``page_log``; an uncaught JavaScript exception in it, or in
    any page the test opens in that context, that the test did not take with ``expect_page_error`` fails the test
    at teardown, named."""
    browser_context.on("page", page_log.attach)
    new = browser_context.new_page()
    page_log.attach(new)
    yield new
    try:
        browser_context.close()  # a last round trip: delivers the events still on their way
    except PlaywrightError:
        pass  # the browser is gone; the test has said so already
    page_log.assert_no_page_errors()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG of ``page`` as ``tests/artifacts/screenshots/<name>.png`` and return its path."""
    path = SCREENSHOTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    return path
