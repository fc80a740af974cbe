"""The console in headless Chromium on the real services: a running run moves on its page, and a dead
letter replayed with the button lets its run complete, its result exact."""
from __future__ import annotations

import time
import urllib.parse

import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot
from tests.support.console import HOSTILE, console_section, log_in, serving
from tests.support.net import free_port
from tests.support.site import DATE
from tests.support.supervisord import Supervisord, assert_exact
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser
EVENTS = 6000
JOB = "merchant_console"  # tests.support.consolejob
RUN = f"{JOB}@date={DATE}"
SLOW_RUN = f"merchant_slow@date={DATE}"  # tests.support.slowjob
SCRIPT_TEXT = "<script>window.__pwned = 1</script>"


def configure(site, extra: str = "") -> None:
    """The site's config for merchant_console, with a console alice may act in."""
    text = site.config.read_text().replace("tests.support.slowjob", "tests.support.consolejob")
    text = text.replace("[options.merchant_slow]", f"[options.{JOB}]")
    site.config.write_text(text + console_section(site.tmp) + extra)


def start_worker(site):
    """A merchant_console worker, stopped with the site's others after the test."""
    proc = site._spawn("worker", "--job", JOB)
    site.workers.append(proc)
    return proc


def start_master(site):
    return site._spawn("master", JOB, "--date", DATE)


def done_count(page) -> int:
    cells = page.locator("#stages td.num.done").all_inner_texts()
    return sum(int(c.replace(",", "")) for c in cells)


def metrics_base() -> int:
    """A multiple of 100 whose first two ports are free: supervised worker N (from 0) serves /metrics on base + N."""
    while True:
        base = free_port() // 100 * 100
        if base > 1024 and all(_free(base + n) for n in (0, 1)):
            return base


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_a_running_run_advances_on_its_page_without_a_reload(page, page_log, make_site):
    site = make_site(EVENTS, {"chunks": 24, "sleep": 0.6}, lease=20.0, lost_after=30.0)  # about 10 s to watch
    base = metrics_base()
    sv = Supervisord(site, 2, env={"SWARM_WORKER_METRICS_PORT": str(base)})  # merchant_slow's workers
    with site.config.open("a") as toml:
        toml.write(console_section(site.tmp))
    user, password = urllib.parse.quote(sv.username, safe=""), urllib.parse.quote(sv.password, safe="")
    with site.config.open("a") as toml:
        toml.write(f'supervisors = ["unix://{user}:{password}@{sv.dir}/supervisor.sock"]\n'
                   f'metrics = ["http://127.0.0.1:{base}/metrics", "http://127.0.0.1:{base + 1}/metrics"]\n')
    sv.start()
    try:
        with serving(site.config, site.tmp, site.logs / "console.log") as url:
            master = site.start_master()
            wait_until(lambda: site.ledger().get_run(SLOW_RUN) is not None, "the run to begin", timeout=60,
                       every=0.2)
            page.goto(f"{url}/run?id={urllib.parse.quote(SLOW_RUN)}")
            page.evaluate("window.__same_page = true")  # gone if the page were loaded again
            first = done_count(page)
            wait_until(lambda: done_count(page) > first, "the page to show more messages done", timeout=120,
                       every=0.5)
            expect(page.locator("#throughput canvas")).to_have_count(1)
            plot = page.locator("#throughput")
            try:  # a line of each stage's throughput, 4 seconds and more of it
                wait_until(lambda: int(plot.get_attribute("data-stages") or 0) >= 1
                           and int(plot.get_attribute("data-points") or 0) >= 4, "the plot to have points",
                           timeout=60, every=0.5)
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {plot.evaluate('e => JSON.stringify(e.dataset)')}, "
                                     f"{page_log.failed_requests}") from None
            screenshot(page, "run-live")
            page.goto(f"{url}/fleet")
            expect(page.locator("table.processes tr")).to_have_count(3)  # the header and two workers
            pools = page.locator("tr[data-pool='merchant_slow/scan']")  # from each worker's metrics
            expect(pools).to_have_count(2)
            assert all(int(limit) >= 1 for limit in pools.locator(".limit").all_inner_texts())
            assert all(busy.isdigit() for busy in pools.locator(".busy").all_inner_texts())
            assert sv.password not in page.content()
            screenshot(page, "fleet")
            page.go_back()
            expect(page.locator("#run-status")).to_have_text("done", timeout=240_000)
            assert master.wait(timeout=60) == 0, site.log_tail()
            page.goto(f"{url}/run?id={urllib.parse.quote(SLOW_RUN)}")
            page.evaluate("window.__same_page = true")
            time.sleep(3)  # a finished run's page stops re-reading itself
            assert page.evaluate("window.__same_page") is True
    finally:
        sv.stop()
    assert_exact(site, EVENTS, SLOW_RUN)


def test_a_dead_letter_replayed_with_the_button_lets_the_run_complete(page, make_site):
    site = make_site(EVENTS, {"chunks": 8, "sleep": 0.05})
    poison = site.tmp / "poison"
    poison.write_text("the r00001 chunk fails until this file is gone\n")
    site.options.update({"poison_file": str(poison), "poison_chunk": "r00001"})
    site.write_config()
    configure(site)
    with serving(site.config, site.tmp, site.logs / "console.log") as url:
        start_worker(site)
        master = start_master(site)
        assert master.wait(timeout=240) == 1, site.log_tail()  # the poisoned chunk dead-lettered: the run failed
        log_in(page, url)
        page.goto(f"{url}/dead-letters")
        letter = page.locator("tr[data-letter]")
        expect(letter).to_have_count(1)
        expect(letter).to_contain_text(SCRIPT_TEXT)  # the handler's error, as text
        assert page.evaluate("window.__pwned") is None
        screenshot(page, "dead-letters-real")
        poison.unlink()  # the fix
        letter.locator("button").click()
        expect(page.locator("h1")).to_have_text("Replay 1 dead letter?")
        screenshot(page, "replay-confirm")
        page.click("#confirm-replay")
        expect(page.locator("h1")).to_have_text("Replayed 1 dead letter")
        page.click("#resume")
        expect(page.locator("#run-status")).to_have_text("done", timeout=240_000)
        screenshot(page, "run-resumed")
    ledger = site.ledger()
    assert ledger.dead_letters() == [] and len(ledger.dead_letters(replayed=True)) == 1
    assert HOSTILE in ledger.dead_letters(replayed=True)[0].reason
    assert_exact(site, EVENTS, RUN)

