"""The ledger contract on the embedded SQLite ledger, plus what only SQLite does."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from swarm.ledger import MessageState
from swarm.ledgers import sql
from swarm.ledgers.sqlite import SqliteLedger
from tests.support.contracts.ledger import LEASE, PHASE, RUN, T0, Clock, LedgerContract, known, message


class TestSqliteLedger(LedgerContract):
    @pytest.fixture
    def url(self, tmp_path) -> str:
        return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_an_in_memory_ledger_is_ready_to_use():
    ledger = SqliteLedger()
    try:
        assert ledger.schema_version() == sql.SCHEMA_VERSION
        assert ledger.claim(RUN, PHASE, known(ledger, message(1)), "w1", LEASE).granted
        assert ledger.counts(RUN) == {MessageState.CLAIMED: 1}
    finally:
        ledger.close()


class TestSqliteLedgerGrouped(LedgerContract):
    """The same contract with concurrent claims and completes sharing transactions, as on MySQL."""

    @pytest.fixture
    def url(self, tmp_path, monkeypatch) -> str:
        monkeypatch.setattr(SqliteLedger, "group_commit", True)
        return f"sqlite:///{tmp_path / 'ledger.db'}"


def test_opening_without_create_uses_an_existing_ledger_and_never_makes_one(tmp_path):
    from swarm.errors import LedgerNotFound

    path = str(tmp_path / "ledger.db")
    with pytest.raises(LedgerNotFound, match=f"no ledger found at {path}$"):
        SqliteLedger(path, create=False)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "other.db").write_bytes(b"")
    with pytest.raises(LedgerNotFound, match="the file has no Swarm schema"):
        SqliteLedger(str(tmp_path / "other.db"), create=False)
    SqliteLedger(path).close()  # creating is the default, for the master, the workers and `db init`
    ledger = SqliteLedger(path, create=False)
    try:
        assert ledger.schema_version() == sql.SCHEMA_VERSION
    finally:
        ledger.close()


def test_a_master_lock_whose_lease_is_over_is_held_by_nobody(monkeypatch):
    ledger = SqliteLedger()
    clock = Clock(T0)
    monkeypatch.setattr(ledger, "now", clock)
    try:
        ledger.lock_master(RUN, "master A")
        clock.t = T0 + SqliteLedger.LOCK_LEASE - 1
        assert "master A" in ledger.master_holder(RUN)
        clock.t = T0 + SqliteLedger.LOCK_LEASE
        assert ledger.master_holder(RUN) is None
    finally:
        ledger.close()


def test_a_master_lock_of_a_process_gone_from_this_host_is_held_by_nobody():
    ledger = SqliteLedger()
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    try:
        ledger._write("INSERT INTO swarm_locks (name, holder, expires_at) VALUES (?, ?, ?)",
                      (RUN, f"{socket.gethostname()}:{gone.pid}:master A", ledger.now() + 60))
        assert ledger.master_holder(RUN) is None
    finally:
        ledger.close()
