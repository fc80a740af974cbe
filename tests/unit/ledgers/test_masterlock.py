"""The master's lock as the master sees it: it acts only while the lock was confirmed recently enough."""
import time

import pytest

from swarm.errors import ConfigError
from swarm.ledgers.masterlock import ACT_WITHIN, HeldLock
from swarm.ledgers.mysql import LOCK_TIMEOUT, parse_url


class FakeConn:
    closed = 0

    def close(self):
        self.closed += 1


def held(timeout=60.0, confirmed=100.0) -> HeldLock:
    return HeldLock(FakeConn(), "lock", "host:1:master", "night", "master", timeout, confirmed=confirmed)


def test_it_holds_only_while_its_last_confirmation_is_recent_enough():
    lock = held()
    assert lock.holds(100.0 + 60.0 * ACT_WITHIN - 0.01)
    assert not lock.holds(100.0 + 60.0 * ACT_WITHIN)


def test_a_confirmation_counts_from_when_it_was_asked_and_a_refusal_loses_it():
    lock = held(confirmed=0.0)
    asked = time.monotonic()
    assert lock.confirm(lambda _: True)
    assert asked <= lock.confirmed <= time.monotonic()
    assert not lock.confirm(lambda _: False) and lock.holds(lock.confirmed)  # a refusal: the caller gives it up
    lock.give_up("refused")
    assert not lock.holds(lock.confirmed) and not lock.confirm(lambda _: True)  # given up: never again
    assert lock.conn.closed == 1


def test_giving_up_while_the_keeper_is_asking_leaves_the_connection_to_the_keeper(caplog):
    lock = held()
    with lock.asking:  # the keeper, blocked in a query
        lock.give_up("not confirmed")
        assert lock.conn.closed == 0  # closing under its read would wait for the read's time-out
    assert "no longer sure (not confirmed)" in caplog.text


def test_a_failing_confirmation_raises_and_changes_nothing():
    lock = held(confirmed=5.0)

    def unreachable(_):
        raise OSError("timed out")

    with pytest.raises(OSError):
        lock.confirm(unreachable)
    assert lock.confirmed == 5.0 and not lock.lost


def test_the_ledger_url_sets_how_long_the_server_waits_for_a_silent_master():
    assert parse_url("mysql://u:secret@db/swarm").lock_timeout == LOCK_TIMEOUT
    assert parse_url("mysql://u:secret@db/swarm?lock_timeout=15").lock_timeout == 15.0
    for bad in ("0", "soon", "1e9"):
        with pytest.raises(ConfigError, match="lock_timeout must be seconds") as caught:
            parse_url(f"mysql://u:secret@db/swarm?lock_timeout={bad}")
        assert "secret" not in str(caught.value)
