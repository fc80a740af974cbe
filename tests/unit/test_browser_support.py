"""tests/support/browser.py: Debian's Chromium, headless, on pages served from 127.0.0.1."""
from __future__ import annotations

import asyncio
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot

pytestmark = pytest.mark.browser

# The empty icon keeps Chromium from asking for /favicon.ico, whose 404 would be a console error.
FILES = {
    "index.html": """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>button</title></head>
<body><button id="go">Go</button><p id="out">waiting</p><script src="app.js"></script></body></html>
""",
    "app.js": """document.getElementById("go").addEventListener("click", () => {
    document.getElementById("out").textContent = "clicked";
});
""",
    "throws.html": """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>throws</title></head>
<body><p>throws</p><script src="throws.js"></script></body></html>
""",
    "throws.js": 'throw new Error("boom from throws.js");\n',
    "missing.html": """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>missing</title></head>
<body><p>missing</p><script src="nowhere.js"></script></body></html>
""",
}


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The pages above, served over HTTP on 127.0.0.1 from a thread; yields the base URL."""
    root = tmp_path_factory.mktemp("site")
    for name, text in FILES.items():
        (root / name).write_text(text)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_click_runs_the_pages_script_and_the_page_is_saved_as_a_screenshot(page, page_log, site):
    page.goto(f"{site}/index.html")
    expect(page.locator("#out")).to_have_text("waiting")
    page.click("#go")
    expect(page.locator("#out")).to_have_text("clicked")
    path = screenshot(page, "browser_support_clicked")
    assert path.parts[-4:] == ("tests", "artifacts", "screenshots", "browser_support_clicked.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert page_log.origin == site
    assert (page_log.page_errors, page_log.console_errors, page_log.failed_requests) == ([], [], [])


def test_an_uncaught_exception_is_recorded_and_fails_the_test_unless_taken(page, page_log, site):
    page.goto(f"{site}/throws.html")
    error = page_log.expect_page_error("boom from throws.js")
    assert error.startswith("Error: boom from throws.js")
    assert f"{site}/throws.js" in error  # its stack says where
    assert page_log.page_errors == []  # taken: the teardown check passes

    with page.expect_event("pageerror"):
        page.reload()
    with pytest.raises(pytest.fail.Exception, match="(?s)uncaught JavaScript exception.*boom from throws.js"):
        page_log.assert_no_page_errors()  # what the page fixture does at teardown
    page_log.page_errors.clear()


def test_a_missing_page_error_is_a_failure_naming_what_there_was(page, page_log, site):
    page.goto(f"{site}/index.html")
    with pytest.raises(pytest.fail.Exception, match="no page error matching 'boom' within 0.2 s"):
        page_log.expect_page_error("boom", timeout=0.2)


def test_requests_the_app_answers_with_an_error_are_recorded(page, page_log, site):
    page.goto(f"{site}/missing.html")
    page.wait_for_load_state("load")
    assert page_log.failed_requests == [f"GET {site}/nowhere.js: 404 File not found"]
    assert any("404" in message for message in page_log.console_errors)
    page.route("http://127.0.0.1:9/**", lambda route: route.abort("connectionrefused"))
    page.evaluate("fetch('http://127.0.0.1:9/elsewhere').catch(() => null)")  # another origin: not recorded
    assert page_log.failed_requests == [f"GET {site}/nowhere.js: 404 File not found"]


def test_between_browser_tests_asyncio_run_works_as_without_a_browser(chromium_session):
    async def answer():
        await asyncio.sleep(0)
        return 42

    assert asyncio.run(answer()) == 42
