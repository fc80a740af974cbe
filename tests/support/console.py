"""``swarm ui`` as a process of its own, for the browser tests: started on a free port, stopped after."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping

from swarm.console.auth import add_user
from tests.support import ROOT
from tests.support.net import free_port
from tests.support.waiting import wait_until

PASSWORD = "correct horse battery staple"
# A handler's error that would run if any page rendered it as HTML: a script and an image's onerror.
HOSTILE = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> bad row"


def console_section(folder: Path, writable: bool = True) -> str:
    """A ``[console]`` section: alice may act (password ``PASSWORD``) when ``writable``, else read-only."""
    text = f'[console]\nlog_dir = "{folder / "console-logs"}"\n'
    if writable:
        users = folder / "console-users"
        add_user(users, "alice", PASSWORD)
        text += f'users_file = "{users}"\n'
    return text


def log_in(page, url: str) -> None:
    """Log alice in through the console's login form in a browser ``page``, as an operator would."""
    from playwright.sync_api import expect

    from tests.support.browser import screenshot

    page.goto(f"{url}/login")
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    screenshot(page, "login")
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text("alice")


@contextlib.contextmanager
def serving(config: Path, cwd: Path, log: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """``swarm --config config ui`` on a free port of 127.0.0.1 until the block ends; yields its base URL."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "swarm.cli", "--config", str(config), "ui", "--port", str(port)],
                                cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url) or proc.poll() is not None, "the console to answer", timeout=60, every=0.2)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False
