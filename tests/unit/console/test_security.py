"""Every action refuses what is not a logged-in operator's own form, and changes nothing when it does."""
from __future__ import annotations

import pytest

from swarm.console.app import ACTIONS
from swarm.ledgers.sqlite import SqliteLedger
from tests.unit.console.conftest import HOSTILE, PASSWORD, TOKEN, csrf_of, log_in

FORMS = {  # a form each action would take from an operator
    "/run/resume": {"id": "noop_pipeline@date=2026-11-02"},
    "/dead-letters/replay": {"id": "1", "confirm": "yes"},
    "/reruns/start": {"job": "noop_pipeline", "dates": "2026-11-01", "from_stage": "a", "chunks": "",
                      "params": "", "force": ""},
    "/held/decide": {"id": "merchant_daily@date=2026-11-02", "action": "reject", "reason": "looks wrong"},
}


def state(tmp_path) -> tuple:
    """What the actions could change: runs and their statuses, dead letters replayed, decisions."""
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    try:
        runs = tuple((r.id, str(r.status)) for r in ledger.runs(None, None, None, None, None, 100))
        letters = tuple((d.id, d.replayed_at) for d in ledger.dead_letters(replayed=True) + ledger.dead_letters())
        decisions = tuple(len(ledger.decisions(r[0])) for r in runs)
        return runs, letters, decisions
    finally:
        ledger.close()


def test_every_action_is_listed_with_a_form(console):
    client, _ = console()
    posts = {r.path for r in client.app.routes if "POST" in (getattr(r, "methods", None) or ())}
    assert posts - {"/login", "/logout"} == set(ACTIONS) == set(FORMS)


def refused(tmp_path, launcher, post, says: str) -> None:
    """``post()`` is refused with 403, saying ``says``, and changes nothing."""
    before = state(tmp_path)
    answer = post()
    assert answer.status_code == 403 and says in answer.text, answer.text[-500:]
    assert state(tmp_path) == before and launcher.started == []


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_without_a_login_or_token_is_refused_and_changes_nothing(console, tmp_path, path):
    client, launcher = console()
    refused(tmp_path, launcher, lambda: client.post(path, data={**FORMS[path], "csrf": csrf_of(client)}),
            "log in first")


@pytest.mark.parametrize("path", ACTIONS)
@pytest.mark.parametrize("bad", [{}, {"csrf": "forged"}], ids=["no-token", "forged-token"])
def test_a_logged_in_action_without_the_csrf_token_is_refused(console, tmp_path, path, bad):
    client, launcher = console()
    log_in(client)
    refused(tmp_path, launcher, lambda: client.post(path, data={**FORMS[path], **bad}), "CSRF token")


@pytest.mark.parametrize("path", ACTIONS)
def test_an_action_from_another_sites_page_is_refused(console, tmp_path, path):
    client, launcher = console()
    log_in(client)
    refused(tmp_path, launcher, lambda: client.post(path, data={**FORMS[path], "csrf": csrf_of(client)},
                                                    headers={"Origin": "https://evil.example"}), "another site")


@pytest.mark.parametrize("path", ACTIONS)
def test_a_read_only_console_refuses_every_action_even_with_a_token(console, tmp_path, path):
    client, launcher = console(writable=False)
    refused(tmp_path, launcher, lambda: client.post(path, data=FORMS[path],
                                                    headers={"Authorization": f"Bearer {TOKEN}"}), "read-only")


def test_the_token_as_a_bearer_header_may_act_without_a_session(console, tmp_path):
    client, _ = console()
    answer = client.post("/held/decide", data=FORMS["/held/decide"], headers={"Authorization": f"Bearer {TOKEN}"},
                         follow_redirects=False)
    assert answer.status_code == 303
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    decisions = ledger.decisions("merchant_daily@date=2026-11-02")
    ledger.close()
    assert [d.action for d in decisions] == ["reject"] and "(by token, in the console)" in decisions[0].reason


def test_a_wrong_bearer_token_is_no_login(console, tmp_path):
    client, _ = console()
    before = state(tmp_path)
    answer = client.post("/held/decide", data=FORMS["/held/decide"], headers={"Authorization": "Bearer nope"})
    assert answer.status_code == 403 and state(tmp_path) == before


def test_login_takes_the_right_password_or_the_token_and_nothing_else(console):
    client, _ = console()
    for user, password in (("alice", "wrong"), ("mallory", PASSWORD), ("", "not the token"), ("alice", TOKEN)):
        answer = client.post("/login", data={"user": user, "password": password, "csrf": csrf_of(client)})
        assert answer.status_code == 403 and "Wrong user name" in answer.text, (user, password)
    log_in(client)
    assert "alice" in client.get("/runs").text
    client.cookies.clear()
    log_in(client, "", TOKEN)
    assert "Log out" in client.get("/runs").text


def test_a_login_form_from_another_page_is_refused(console):
    client, _ = console()
    answer = client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": "made up"})
    assert answer.status_code == 403 and "stale" in answer.text


def test_every_page_escapes_what_jobs_and_messages_control(console):
    client, _ = console()
    for path in ("/runs", "/runs?status=failed", "/run?id=noop_pipeline%40date%3D2026-11-02", "/dead-letters",
                 "/dead-letter?id=1", f"/runs?text={HOSTILE}", "/run?id=%3Cscript%3E"):
        page = client.get(path).text
        assert "<script>document" not in page, path
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in client.get("/dead-letter?id=1").text


def test_pages_forbid_inline_scripts_and_framing(console):
    client, _ = console()
    answer = client.get("/runs")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff" and answer.headers["cache-control"] == "no-store"


def test_no_page_shows_a_password_of_a_configured_url(console):
    extra = ('supervisors = ["http://ops:s3cr3t-supervisor@127.0.0.1:9/"]\n'
             'metrics = ["http://scrape:s3cr3t-metrics@127.0.0.1:9/metrics"]\n')
    client, _ = console(extra=extra)
    log_in(client)
    for path in ("/fleet", "/runs", "/reruns", "/dead-letters", "/held"):
        page = client.get(path).text
        assert "s3cr3t" not in page, path
    fleet = client.get("/fleet").text
    assert "not answering" in fleet and "ops:***@127.0.0.1:9" in fleet
