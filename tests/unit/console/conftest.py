"""A console over a SQLite ledger with a few runs, served in process (Starlette's TestClient)."""
from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from swarm import config as config_mod
from swarm.commands.ui import backends
from swarm.console.app import build
from swarm.console.auth import Guard, add_user, load_guard
from swarm.console.launch import Launcher, Started
from swarm.ledger import RunStatus
from swarm.ledgers.sqlite import SqliteLedger

TOKEN = "a-token-of-more-than-sixteen-characters"
PASSWORD = "correct horse battery staple"
HOSTILE = "<script>document.title='pwned'</script> bad row"


class RecordingLauncher(Launcher):
    """Records what it would start instead of starting it; dry runs run for real."""

    def __init__(self, cfg, log_dir: Path):
        super().__init__(cfg, log_dir)
        self.started: list[list[str]] = []

    def start(self, args, label):
        self.started.append(list(args))
        return Started(0, self.log_dir / f"{label}.log", tuple(args), 0.0)


def seed(ledger: SqliteLedger) -> None:
    """Two runs of two jobs: failed with a hostile error, held; and a dead letter with that reason."""
    ledger.open_run("noop_pipeline@date=2026-11-02", "noop_pipeline", {"date": "2026-11-02"})
    ledger.update_run("noop_pipeline@date=2026-11-02", status=RunStatus.FAILED, error=HOSTILE, finished=True)
    ledger.open_run("merchant_daily@date=2026-11-02", "merchant_daily", {"date": "2026-11-02"})
    ledger.update_run("merchant_daily@date=2026-11-02", status=RunStatus.HELD, finished=True)
    ledger.add_dead_letter("swarm.noop_pipeline.a", HOSTILE, b"\x00not an envelope", None)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """The config file, ledger and users of a console; ``site(writable=False)`` for a read-only one."""
    monkeypatch.chdir(tmp_path)

    def make(writable: bool = True, extra: str = "") -> config_mod.Config:
        users, token = tmp_path / "users", tmp_path / "token"
        text = (f'[backends]\nledger = "sqlite:///{tmp_path}/swarm.db"\ntables = "embedded:///{tmp_path}/t.db"\n'
                f'[console]\nlog_dir = "{tmp_path}/logs"\n')
        if writable:
            add_user(users, "alice", PASSWORD)
            token.write_text(TOKEN + "\n")
            text += f'users_file = "{users}"\ntoken_file = "{token}"\n'
        (tmp_path / "swarm.toml").write_text(text + extra)
        ledger = SqliteLedger(str(tmp_path / "swarm.db"))
        seed(ledger)
        ledger.close()
        return config_mod.load(str(tmp_path / "swarm.toml"), env={})

    return make


@pytest.fixture
def console(site, tmp_path):
    """``console(writable=True)``: a TestClient and its launcher's record."""
    def make(writable: bool = True, extra: str = "") -> tuple[TestClient, RecordingLauncher]:
        cfg = site(writable, extra)
        launcher = RecordingLauncher(cfg, tmp_path / "logs")
        guard = load_guard(cfg["console"]) if writable else Guard()
        app = build(cfg, guard, "k" * 32, backends(cfg), launcher=launcher)
        return TestClient(app, base_url="http://console.test"), launcher

    return make


def csrf_of(client: TestClient, path: str = "/login") -> str:
    """The CSRF token a page of the console carries in its forms."""
    import re

    page = client.get(path).text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def log_in(client: TestClient, user: str = "alice", password: str = PASSWORD) -> None:
    answer = client.post("/login", data={"user": user, "password": password, "csrf": csrf_of(client)},
                         follow_redirects=False)
    assert answer.status_code == 303, answer.text
