"""What an operator's actions do, once the console lets them through."""
from __future__ import annotations

import re

from swarm import cli
from swarm.ledgers.sqlite import SqliteLedger
from tests.unit.console.conftest import PASSWORD, csrf_of, log_in


def test_a_replay_asks_first_then_replays_and_offers_to_resume_the_failed_run(console, tmp_path):
    client, launcher = console()
    log_in(client)
    csrf = csrf_of(client, "/dead-letters")
    asked = client.post("/dead-letters/replay", data={"id": "1", "csrf": csrf})
    assert asked.status_code == 200 and "Replay 1 dead letter?" in asked.text
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    assert ledger.dead_letters()[0].replayed_at is None  # asking changed nothing
    ledger.close()
    done = client.post("/dead-letters/replay", data={"id": "1", "csrf": csrf, "confirm": "yes"})
    assert done.status_code == 200 and "Replayed 1 dead letter" in done.text
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    assert ledger.dead_letters() == [] and len(ledger.dead_letters(replayed=True)) == 1
    ledger.close()


def test_resume_starts_the_runs_master_with_its_params(console):
    client, launcher = console()
    log_in(client)
    answer = client.post("/run/resume", data={"id": "noop_pipeline@date=2026-11-02", "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/run?id=noop_pipeline")
    assert launcher.started == [["run", "noop_pipeline", "--param", "date=2026-11-02"]]  # in process: swarm run


def ran(tmp_path, date: str = "2026-11-01") -> None:
    """A real run of noop_pipeline in the console's ledger (``swarm run``), for a rerun to rerun."""
    assert cli.main(["--config", str(tmp_path / "swarm.toml"), "run", "noop_pipeline", "--date", date]) == 0


def test_a_rerun_is_previewed_by_its_dry_run_then_started_as_swarm_rerun(console, tmp_path):
    client, launcher = console()
    ran(tmp_path)
    log_in(client)
    preview = client.get("/reruns/preview", params={"job": "noop_pipeline", "dates": "2026-11-01",
                                                     "from_stage": "b"})
    assert preview.status_code == 200 and 'id="dry-run"' in preview.text and "Start this rerun" in preview.text
    assert re.search(r"noop_pipeline@date=2026-11-01", preview.text)
    started = client.post("/reruns/start", data={"job": "noop_pipeline", "dates": "2026-11-01", "from_stage": "b",
                                                 "chunks": "", "params": "", "force": "", "csrf": csrf_of(client)})
    assert started.status_code == 200, started.text
    assert launcher.started == [["rerun", "noop_pipeline", "--from-stage", "b", "--dates", "2026-11-01"]]


def test_a_refused_dry_run_shows_why_and_offers_no_start(console):
    client, _ = console()
    log_in(client)
    preview = client.get("/reruns/preview", params={"job": "noop_pipeline", "dates": "2026-11-09",
                                                     "from_stage": "b"})
    assert "refused (exit 2)" in preview.text and "Start this rerun" not in preview.text


def test_a_night_held_by_a_master_is_shown_and_never_overridden(console, tmp_path):
    client, launcher = console()
    ran(tmp_path)
    log_in(client)
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    ledger.lock_master("noop_pipeline@date=2026-11-01", "swarm master ops-host:4242")
    try:
        fields = {"job": "noop_pipeline", "dates": "2026-11-01", "from_stage": "b"}
        preview = client.get("/reruns/preview", params=fields)
        assert re.search(r"is held by \S*swarm master ops-host:4242", preview.text), preview.text[-1500:]
        assert "Start this rerun" not in preview.text
        refused = client.post("/reruns/start", data={**fields, "chunks": "", "params": "", "force": "",
                                                     "csrf": csrf_of(client)})
        assert refused.status_code == 409 and "never overrides" in refused.text
        assert launcher.started == []
    finally:
        ledger.unlock_master("noop_pipeline@date=2026-11-01")
        ledger.close()


def test_a_held_run_is_rejected_with_the_reason_and_who(console, tmp_path):
    client, _ = console()
    log_in(client)
    page = client.get("/held").text
    assert "merchant_daily@date=2026-11-02" in page and "Reject" in page
    answer = client.post("/held/decide", data={"id": "merchant_daily@date=2026-11-02", "action": "reject",
                                               "reason": "totals are off", "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    run = ledger.get_run("merchant_daily@date=2026-11-02")
    reasons = [d.reason for d in ledger.decisions(run.id)]
    ledger.close()
    assert run.status == "rejected" and reasons == ["totals are off (by alice, in the console)"]


def test_a_decision_without_a_reason_decides_nothing(console, tmp_path):
    client, _ = console()
    log_in(client)
    answer = client.post("/held/decide", data={"id": "merchant_daily@date=2026-11-02", "action": "reject",
                                               "reason": " ", "csrf": csrf_of(client)})
    assert answer.status_code == 400
    ledger = SqliteLedger(str(tmp_path / "swarm.db"))
    assert ledger.get_run("merchant_daily@date=2026-11-02").status == "held"
    ledger.close()


def test_publishing_a_held_run_starts_swarm_publish_with_the_reason_and_who(console):
    client, launcher = console()
    log_in(client)
    answer = client.post("/held/decide", data={"id": "merchant_daily@date=2026-11-02", "action": "publish",
                                               "reason": "a short day, known", "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303
    assert launcher.started == [["publish", "merchant_daily@date=2026-11-02", "--reason",
                                 "a short day, known (by alice, in the console)"]]


def test_behind_a_proxy_under_a_prefix_every_link_and_form_keeps_it(site, tmp_path):
    from starlette.testclient import TestClient

    from swarm.commands.ui import backends
    from swarm.console.app import build
    from swarm.console.auth import load_guard

    cfg = site(True, 'root_path = "/swarm"\n')
    app = build(cfg, load_guard(cfg["console"]), "k" * 32, backends(cfg))
    client = TestClient(app, base_url="http://console.test", root_path="/swarm")
    page = client.get("/swarm/runs")
    assert page.status_code == 200
    links = re.findall(r'(?:href|action|src)="(/[^"]*)"', page.text)
    assert links and all(link.startswith("/swarm/") for link in links), links
    assert client.get("/swarm/static/console.js").status_code == 200
    form = {"user": "alice", "password": PASSWORD, "csrf": csrf_of(client, "/swarm/login")}
    answer = client.post("/swarm/login", data=form, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/swarm/runs"
