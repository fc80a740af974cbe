"""The console in headless Chromium, on the embedded backends: filtering, reruns, escaping, refusals.

``swarm ui`` runs as a process of its own, as an operator starts it; runs
are made by ``swarm run``. Each test saves screenshots of the pages it
visits in tests/artifacts/screenshots.
"""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from swarm import cli
from swarm.ledger import CheckResult, RunStatus
from swarm.ledgers.sqlite import SqliteLedger
from tests.support.browser import screenshot
from tests.support.console import HOSTILE, console_section, log_in, serving
from tests.support.waiting import wait_until

pytestmark = pytest.mark.browser
SCRIPT_TEXT = "<script>window.__pwned = 1</script>"


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    """A site on the embedded backends: ``embedded(writable=True)`` -> (config path, ledger opener)."""
    monkeypatch.chdir(tmp_path)

    def make(writable: bool = True):
        config = tmp_path / "swarm.toml"
        config.write_text(f'[backends]\nledger = "sqlite:///{tmp_path}/swarm.db"\n'
                          f'tables = "embedded:///{tmp_path}/tables.db"\n'
                          f'[jobs]\nmodules = ["tests.unit.console.hostilejob"]\n'
                          + console_section(tmp_path, writable))
        return config

    return make


def swarm_run(config, job: str, date: str) -> int:
    return cli.main(["--config", str(config), "run", job, "--date", date])


def ledger_of(tmp_path) -> SqliteLedger:
    return SqliteLedger(str(tmp_path / "swarm.db"))


def test_the_runs_page_lists_runs_and_filters_them(page, embedded, tmp_path):
    config = embedded()
    assert swarm_run(config, "noop_pipeline", "2026-11-01") == 0
    assert swarm_run(config, "hostile", "2026-11-02") == 1
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        page.goto(f"{url}/runs")
        rows = page.locator("#runs tbody tr")
        expect(rows).to_have_count(2)
        expect(page.locator("tr[data-run='noop_pipeline@date=2026-11-01'] .status")).to_have_text("done")
        expect(page.locator("tr[data-run='hostile@date=2026-11-02'] .status")).to_have_text("failed")
        screenshot(page, "runs")
        page.select_option("select[name=status]", "failed")
        page.click("#filters button[type=submit]")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-run", "hostile@date=2026-11-02")
        page.select_option("select[name=status]", "")
        page.fill("input[name=text]", "no error says this")
        page.click("#filters button[type=submit]")
        expect(page.locator("#runs .empty")).to_have_text("No run matches.")
        page.fill("input[name=text]", "bad row")
        page.select_option("select[name=job]", "hostile")
        page.click("#filters button[type=submit]")
        expect(rows).to_have_count(1)
        assert "text=bad+row" in page.url and "job=hostile" in page.url  # a filtered view is a link to share
        screenshot(page, "runs-filtered")


def test_a_handler_error_holding_a_script_tag_is_shown_as_text_everywhere(page, embedded, tmp_path):
    config = embedded()
    assert swarm_run(config, "hostile", "2026-11-02") == 1
    ledger = ledger_of(tmp_path)
    [letter] = ledger.dead_letters()
    ledger.close()
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        for name, path in (("runs-hostile", "/runs"), ("run-failed", "/run?id=hostile%40date%3D2026-11-02"),
                           ("dead-letters", "/dead-letters"), ("dead-letter", f"/dead-letter?id={letter.id}")):
            page.goto(url + path)
            # the text, as the handler wrote it (the runs page shows an error's first 160 characters)
            expect(page.locator("main")).to_contain_text(SCRIPT_TEXT if path != "/runs" else "<script>window.__pwned")
            page.wait_for_timeout(300)  # an image's onerror would have fired by now
            assert page.evaluate("window.__pwned") is None, path
            assert page.locator("main script").count() == 0 and page.locator("main img").count() == 0, path
            screenshot(page, name)
        page.goto(url + "/run?id=hostile%40date%3D2026-11-02")
        expect(page.locator(".failure pre").first).to_contain_text(HOSTILE)


def test_a_rerun_is_started_after_its_dry_run_preview(page, embedded, tmp_path):
    config = embedded()
    assert swarm_run(config, "noop_pipeline", "2026-11-01") == 0
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        log_in(page, url)
        page.goto(f"{url}/reruns")
        page.select_option("#rerun-job select[name=job]", "noop_pipeline")
        page.click("#rerun-job button")
        page.fill("input[name=dates]", "2026-11-01")
        page.select_option("select[name=from_stage]", "a")
        expect(page.locator("#start-rerun")).to_have_count(0)  # no start before the preview
        page.click("#rerun-form button[type=submit]")
        expect(page.locator("#dry-run")).to_contain_text("noop_pipeline@date=2026-11-01+r1")
        screenshot(page, "rerun-preview")
        page.click("#start-rerun")
        expect(page.locator("#started")).to_contain_text("rerun noop_pipeline --from-stage a --dates 2026-11-01")

        def rerun_done():
            ledger = ledger_of(tmp_path)
            try:
                run = ledger.get_run("noop_pipeline@date=2026-11-01+r1")
                return run is not None and run.status == RunStatus.DONE
            finally:
                ledger.close()

        wait_until(rerun_done, "the rerun to finish", timeout=90, every=0.5)
        page.goto(f"{url}/runs?job=noop_pipeline")
        expect(page.locator("tr[data-run='noop_pipeline@date=2026-11-01+r1'] .status")).to_have_text("done")
        screenshot(page, "runs-after-rerun")
        page.goto(f"{url}/reruns")
        expect(page.locator("#launched")).to_contain_text("exited 0")


def test_an_action_without_a_login_is_refused_and_changes_nothing(page, embedded, tmp_path):
    config = embedded()
    assert swarm_run(config, "hostile", "2026-11-02") == 1
    before = _state(tmp_path)
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        page.goto(f"{url}/dead-letters")
        page.click("tr[data-letter] button")  # Replay…, as a visitor who has not logged in
        expect(page.locator("#message")).to_contain_text("log in first")
        screenshot(page, "refused")
        # A form on another site's page, posting to the console, is refused for where it comes from.
        form = (f'<form method="post" action="{url}/run/resume"><input name="id" value="hostile@date=2026-11-02">'
                f'<button>go</button></form>')
        page.route("http://elsewhere.test/**", lambda route: route.fulfill(body=form, content_type="text/html"))
        page.goto("http://elsewhere.test/")
        page.click("button")
        expect(page.locator("#message")).to_contain_text("another site's page is refused")
        answer = page.request.post(f"{url}/dead-letters/replay", form={"all": "1", "confirm": "yes"})
        assert answer.status == 403
    assert _state(tmp_path) == before
    assert not list((tmp_path / "console-logs").glob("*.log"))  # no master was started


def test_a_read_only_console_offers_no_action_and_refuses_them_all(page, embedded, tmp_path):
    config = embedded(writable=False)
    assert swarm_run(config, "hostile", "2026-11-02") == 1
    before = _state(tmp_path)
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        page.goto(f"{url}/dead-letters")
        expect(page.locator("header .badge")).to_have_text("read-only")
        expect(page.locator("main button")).to_have_count(0)
        page.goto(f"{url}/run?id=hostile%40date%3D2026-11-02")
        expect(page.locator("main button")).to_have_count(0)
        for path in ("/dead-letters/replay", "/run/resume", "/reruns/start", "/held/decide"):
            answer = page.request.post(url + path, form={"all": "1", "confirm": "yes", "id": "1"})
            assert answer.status == 403 and "read-only" in answer.text(), path
    assert _state(tmp_path) == before


def test_a_held_run_is_rejected_with_a_reason(page, embedded, tmp_path):
    config = embedded()
    assert swarm_run(config, "noop_pipeline", "2026-11-01") == 0
    ledger = ledger_of(tmp_path)
    run = "noop_pipeline@date=2026-11-03"
    ledger.open_run(run, "noop_pipeline", {"date": "2026-11-03"})
    ledger.save_checks(run, [CheckResult("row_count", False, 310.0, 1000.0, "±20%", "31% of the usual rows")])
    ledger.update_run(run, status=RunStatus.HELD, finished=True)
    ledger.close()
    with serving(config, tmp_path, tmp_path / "console.log") as url:
        log_in(page, url)
        page.goto(f"{url}/held")
        section = page.locator(f"section[data-run='{run}']")
        expect(section).to_contain_text("31% of the usual rows")
        screenshot(page, "held")
        section.locator("input[name=reason]").fill("the source feed was cut short")
        section.locator("button[value=reject]").click()
        expect(page.locator("#run-status")).to_have_text("rejected")
        expect(page.locator("main")).to_contain_text("the source feed was cut short (by alice, in the console)")
        screenshot(page, "run-rejected")


def _state(tmp_path) -> tuple:
    ledger = ledger_of(tmp_path)
    try:
        runs = tuple((r.id, str(r.status), r.updated_at) for r in ledger.runs(None, None, None, None, None, 100))
        letters = tuple((d.id, d.replayed_at) for d in ledger.dead_letters() + ledger.dead_letters(replayed=True))
        return runs, letters
    finally:
        ledger.close()
