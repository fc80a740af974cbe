"""The ledger contract on MariaDB/MySQL, plus lost connections, lock conflicts and the server-side lock.

Needs the server of ``make services``: 127.0.0.1:3306, root with no password.
Each module run gets a database of its own, dropped at the end.
"""
from __future__ import annotations

import concurrent.futures
import logging
import threading
import time

import pymysql
import pytest

from swarm.errors import BackendError, ConfigError, Fenced, MasterLocked, MasterLockLost
from swarm.ledger import ClaimRequest, Completion, MessageState
from swarm.ledgers import schema
from swarm.ledgers.mysql import UNNAMED_HOLDER, MysqlLedger
from tests.support.contracts.ledger import (
    EXPIRED,
    LEASE,
    PHASE,
    RUN,
    LedgerContract,
    known,
    message,
    outcome,
    retry_while_locked,
    together,
)
from tests.support.faultproxy import FaultProxy
from tests.support.mysql import PORT, mysql_admin, mysql_url, temporary_database
from tests.support.net import HOST

pytestmark = pytest.mark.integration


def connect(database: str | None = None) -> pymysql.connections.Connection:
    conn = mysql_admin(database=database, connect_timeout=5, read_timeout=60)
    with conn.cursor() as cur:
        cur.execute("SET SESSION lock_wait_timeout = 20")  # metadata locks: fail rather than hang
    return conn


@pytest.fixture(scope="module")
def database():
    with temporary_database() as name:
        yield name


@pytest.fixture
def admin(database):
    conn = connect(database)
    yield conn
    conn.close()


def drop_tables(admin) -> None:
    with admin.cursor() as cur:
        cur.execute("SHOW TABLES")
        for (table,) in cur.fetchall():
            cur.execute(f"DROP TABLE {table}")


@pytest.fixture
def url(database, admin) -> str:
    """An empty ledger, schema and all."""
    drop_tables(admin)
    ledger = MysqlLedger(mysql_url(database))
    ledger.init_schema()
    ledger.close()
    return mysql_url(database)


def kill_sessions(admin, database: str) -> int:
    """KILL every other session using the test database; how many."""
    with admin.cursor() as cur:
        cur.execute(
            "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()", (database,)
        )
        ids = [row[0] for row in cur.fetchall()]
        for session in ids:
            cur.execute(f"KILL {session}")
    return len(ids)


class TestMysqlLedger(LedgerContract):
    pass


# lost connections ------------------------------------------------------------------------


def test_a_killed_connection_is_replaced_by_a_new_one(url, database, admin):
    ledger = MysqlLedger(url)
    try:
        ledger.open_run(RUN, "nightly", {})
        known(ledger, message(1))
        assert kill_sessions(admin, database) == 1
        assert ledger.get_run(RUN).id == RUN
        claim = ledger.claim(RUN, PHASE, message(1), "w1", LEASE)
        assert claim.granted and claim.attempts == 1
    finally:
        ledger.close()


class KilledBeforeCommit(MysqlLedger):
    """Its next COMMITs find their session killed: nothing of the transaction is kept."""

    def __init__(self, url: str, admin):
        super().__init__(url)
        self.admin, self.kills = admin, 0

    def _commit(self, conn):
        if self.kills:
            self.kills -= 1
            with self.admin.cursor() as cur:
                cur.execute(f"KILL {conn.thread_id()}")
        super()._commit(conn)


def test_a_transaction_whose_session_is_killed_runs_again_once(url, admin):
    ledger = KilledBeforeCommit(url, admin)
    try:
        m = known(ledger, message(1))
        ledger.kills = 1
        claim = ledger.claim(RUN, PHASE, m, "w1", LEASE)
        assert claim.granted and claim.attempts == 1
        ledger.kills = 2
        ledger.complete(m.id, claim.token, RUN, PHASE, [message("1.0", stage="write")], {"rows": 2})
        assert ledger.kills == 0
        assert ledger.counts(RUN) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
        assert ledger.counters(RUN) == {"rows": 2}
    finally:
        ledger.close()


class LostAcks(MysqlLedger):
    """Its next COMMITs land, but the answer never arrives: the client sees a lost connection."""

    lose = 0

    def _commit(self, conn):
        super()._commit(conn)
        if self.lose:
            self.lose -= 1
            conn.close()
            raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")


@pytest.fixture
def lossy(url):
    ledger = LostAcks(url)
    yield ledger
    ledger.close()


def test_a_claim_whose_commit_answer_was_lost_is_still_granted_once(lossy):
    m = known(lossy, message(1))
    lossy.lose = 1
    claim = lossy.claim(RUN, PHASE, m, "w1", LEASE)
    assert claim.granted and claim.attempts == 1 and lossy.lose == 0
    lossy.complete(m.id, claim.token, RUN, PHASE, [], {})  # the token it returned is the current one
    assert lossy.counts(RUN) == {MessageState.DONE: 1}


def test_a_complete_whose_commit_answer_was_lost_is_not_fenced(lossy):
    m, child = known(lossy, message(1)), message("1.0", stage="write")
    claim = lossy.claim(RUN, PHASE, m, "w1", LEASE)
    lossy.lose = 1
    lossy.complete(m.id, claim.token, RUN, PHASE, [child], {"rows": 7})
    assert lossy.counts(RUN) == {MessageState.DONE: 1, MessageState.QUEUED: 1}
    assert lossy.counters(RUN) == {"rows": 7}


def test_a_group_whose_commit_answer_was_lost_gives_each_member_its_own_outcome(lossy):
    msgs = [message(i) for i in range(4)]
    known(lossy, *msgs)
    refused = lossy.claim(RUN, PHASE, msgs[3], "w2", LEASE)
    lossy.lose = 1
    requests = [(m.id, ClaimRequest(RUN, PHASE, m)) for m in msgs]
    claims = [outcome(p) for p in together(lossy._claim_group, ("w1", LEASE), requests)]
    assert lossy.lose == 0
    assert [(c.granted, c.attempts) for c in claims] == [(True, 1), (True, 1), (True, 1), (False, 1)]
    calls = [(m.id, Completion(m.id, c.token, RUN, PHASE, [message(f"{i}.0", stage="write")], {"rows": 1}))
             for i, (m, c) in enumerate(zip(msgs[:3], claims))]
    calls.append((msgs[3].id, Completion(msgs[3].id, refused.token + 1, RUN, PHASE, [], {"rows": 100})))
    lossy.lose = 1
    assert [outcome(p) for p in together(lossy._complete_group, None, calls)] == [None, None, None, Fenced]
    assert lossy.lose == 0
    assert lossy.counts(RUN) == {MessageState.DONE: 3, MessageState.QUEUED: 3, MessageState.CLAIMED: 1}
    assert lossy.counters(RUN) == {"rows": 3}


def test_a_group_whose_session_is_killed_runs_again(url, admin):
    ledger = KilledBeforeCommit(url, admin)
    try:
        msgs = [message(i) for i in range(3)]
        known(ledger, *msgs)
        ledger.kills = 1
        group = together(ledger._claim_group, ("w1", LEASE), [(m.id, ClaimRequest(RUN, PHASE, m)) for m in msgs])
        claims = [outcome(p) for p in group]
        assert ledger.kills == 0 and all(c.granted and c.attempts == 1 for c in claims)
        ledger.kills = 1
        calls = [(m.id, Completion(m.id, c.token, RUN, PHASE, [], {"rows": 2})) for m, c in zip(msgs, claims)]
        assert [outcome(p) for p in together(ledger._complete_group, None, calls)] == [None] * 3
        assert ledger.kills == 0
        assert ledger.counts(RUN) == {MessageState.DONE: 3} and ledger.counters(RUN) == {"rows": 6}
    finally:
        ledger.close()


def test_a_release_whose_commit_answer_was_lost_is_not_fenced(lossy):
    m = known(lossy, message(1))
    claim = lossy.claim(RUN, PHASE, m, "w1", LEASE)
    lossy.lose = 1
    lossy.release(m.id, claim.token, MessageState.QUEUED, "Fault: busy")
    assert lossy.counts(RUN) == {MessageState.QUEUED: 1}


def test_a_dead_letter_whose_commit_answer_was_lost_is_recorded_once(lossy):
    lossy.lose = 1
    dl_id = lossy.add_dead_letter("swarm.nightly.read", "bad msgpack", b"\xc1", None)
    assert [d.id for d in lossy.dead_letters()] == [dl_id]


def test_expired_leases_reclaimed_with_a_lost_commit_answer_are_still_returned(lossy):
    m = known(lossy, message(1))
    lossy.claim(RUN, PHASE, m, "w1", EXPIRED)
    lossy.lose = 1
    assert lossy.reclaim_expired(RUN, lossy.now()) == [m]
    assert lossy.counts(RUN) == {MessageState.QUEUED: 1}


def test_failing_connections_give_up_with_a_clear_error_and_no_password(caplog):
    ledger = MysqlLedger("mysql://swarm:s3cret-Pa55@127.0.0.1:1/swarm")  # nothing listens on port 1
    ledger.attempts, ledger.backoff = 3, 0.001
    with caplog.at_level(logging.WARNING), pytest.raises(BackendError) as failed:
        ledger.get_run(RUN)
    assert "gave up after 3 attempts" in str(failed.value) and "error 2003" in str(failed.value)
    assert "swarm:***@127.0.0.1:1/swarm" in str(failed.value)
    assert len(caplog.records) == 2
    assert "s3cret-Pa55" not in str(failed.value) + caplog.text


def test_a_refused_login_is_not_retried_and_hides_the_password(database):
    ledger = MysqlLedger(f"mysql://root:s3cret-Pa55@127.0.0.1:3306/{database}")
    with pytest.raises(BackendError) as failed:
        ledger.get_run(RUN)
    assert "error 1045" in str(failed.value) and "gave up" not in str(failed.value)
    assert "s3cret-Pa55" not in str(failed.value)


@pytest.mark.parametrize("bad, shown", [
    ("mysql://root:pw@127.0.0.1:3306/", "mysql://root:***@127.0.0.1:3306/"),
    ("mysql://root:pw@127.0.0.1:port/db", "mysql://127.0.0.1"),  # no port to read: the scheme and host only
])
def test_a_malformed_url_is_a_config_error(bad, shown):
    with pytest.raises(ConfigError) as failed:
        MysqlLedger(bad)
    assert shown in str(failed.value) and ":pw@" not in str(failed.value)


def test_missing_tables_point_to_db_init(url, admin):
    ledger = MysqlLedger(url)
    try:
        drop_tables(admin)
        with pytest.raises(BackendError, match="swarm db init"):
            ledger.get_run(RUN)
    finally:
        ledger.close()


# lock conflicts --------------------------------------------------------------------------


def wait_for_lock_wait(admin, statement: str) -> None:
    """Return once a transaction running ``statement...`` waits for a row lock."""
    deadline = time.monotonic() + 30
    while True:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM information_schema.innodb_trx "
                "WHERE trx_state = 'LOCK WAIT' AND trx_query LIKE %s",
                (statement + "%",),
            )
            if cur.fetchone()[0]:
                return
        assert time.monotonic() < deadline, "no transaction came to wait for a lock"
        time.sleep(0.2)  # InnoDB refreshes this table only after 0.1 s without a read


def test_a_deadlock_victim_runs_again(url, database, admin, caplog):
    ledger = MysqlLedger(url)
    first, second = message(1), message(2)
    fillers = [message(f"filler{i}") for i in range(50)]
    known(ledger, first, second, *fillers)
    leases = [(m.id, ledger.claim(RUN, PHASE, m, "w1", EXPIRED).token) for m in (first, second)]
    other = connect(database)
    try:
        with other.cursor() as cur:
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            cur.execute("BEGIN")
            # Many rows changed make this transaction the costlier one, so
            # InnoDB picks the ledger's as the deadlock victim.
            cur.executemany("UPDATE swarm_messages SET updated_at = 1 WHERE id = %s", [(m.id,) for m in fillers])
            cur.execute("UPDATE swarm_messages SET updated_at = 1 WHERE id = %s", (second.id,))
            with concurrent.futures.ThreadPoolExecutor(1) as pool, caplog.at_level(logging.WARNING):
                renewal = pool.submit(ledger.renew, leases, LEASE)  # locks first, then waits for second
                wait_for_lock_wait(admin, "UPDATE swarm_messages SET lease_until")
                cur.execute("UPDATE swarm_messages SET updated_at = 1 WHERE id = %s", (first.id,))
                cur.execute("COMMIT")
                renewal.result()
        assert "error 1213" in caplog.text
        assert not ledger.claim(RUN, PHASE, first, "w2", LEASE).granted  # both leases were renewed
        assert not ledger.claim(RUN, PHASE, second, "w2", LEASE).granted
    finally:
        other.close()
        ledger.close()


def test_a_lock_wait_timeout_runs_again(url, database, caplog):
    ledger = MysqlLedger(url)
    ledger.lock_wait_timeout = 1
    m = known(ledger, message(1))
    other = connect(database)
    try:
        with other.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT state FROM swarm_messages WHERE id = %s FOR UPDATE", (m.id,))
            with concurrent.futures.ThreadPoolExecutor(1) as pool, caplog.at_level(logging.WARNING):
                claim = pool.submit(ledger.claim, RUN, PHASE, m, "w1", LEASE)
                while "error 1205" not in caplog.text:
                    assert not claim.done(), claim.result()
                    time.sleep(0.01)
                cur.execute("COMMIT")
                assert claim.result().granted
    finally:
        other.close()
        ledger.close()


def test_an_overlong_id_is_refused_not_cut_short(url):
    ledger = MysqlLedger(url)
    try:
        long_id = message("x" * 300).id
        with pytest.raises(BackendError, match="too long"):
            ledger.save_plan(RUN, PHASE, [message(1), message("x" * 300)])
        assert ledger.counts(RUN) == {}
        assert len(long_id) > 255
    finally:
        ledger.close()


# schema ------------------------------------------------------------------------------------


def test_concurrent_migrations_apply_each_step_once(url, admin):
    drop_tables(admin)
    ledgers = [MysqlLedger(url) for _ in range(6)]
    barrier = threading.Barrier(len(ledgers))

    def migrate(ledger: MysqlLedger) -> list[int]:
        barrier.wait()
        return ledger.migrate()

    try:
        with concurrent.futures.ThreadPoolExecutor(len(ledgers)) as pool:
            applied = list(pool.map(migrate, ledgers))
        steps = list(range(1, len(schema.MIGRATIONS) + 1))
        assert sorted(applied) == [[]] * (len(ledgers) - 1) + [steps]
        assert ledgers[0].schema_version() == len(schema.MIGRATIONS)
    finally:
        for ledger in ledgers:
            ledger.close()


# the master's lock -------------------------------------------------------------------------


def test_a_lock_lost_with_its_session_is_taken_again_on_renewal(url, database, admin):
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    try:
        ledger.lock_master(RUN, "master A")
        kill_sessions(admin, database)
        retry_while_locked(lambda: ledger.lock_master(RUN, "master A"))
        with pytest.raises(MasterLocked, match="master A"):
            other.lock_master(RUN, "master B")
    finally:
        ledger.close()
        other.close()


def test_a_lock_lost_and_taken_by_another_master_is_refused_on_renewal(url, database, admin):
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    try:
        ledger.lock_master(RUN, "master A")
        kill_sessions(admin, database)
        retry_while_locked(lambda: other.lock_master(RUN, "master B"))
        with pytest.raises(MasterLocked, match="master B"):
            ledger.lock_master(RUN, "master A")
    finally:
        ledger.close()
        other.close()


def test_a_master_cut_off_from_the_server_stops_acting_before_another_can_take_its_lock(url, database):
    """Partitions, scenario 3: two masters never both act on one night, and the second need not wait hours."""
    lock_timeout = 3.0
    with FaultProxy((HOST, PORT)) as proxy:
        first = MysqlLedger(mysql_url(database, port=proxy.port) + f"?lock_timeout={lock_timeout:g}")
        second = MysqlLedger(mysql_url(database))
        first.connect_timeout, first.retry_for = 2, 3.0  # its calls while cut off fail sooner
        try:
            first.lock_master(RUN, "master A")
            known(first, message(1))
            proxy.blackhole()  # A hears nothing from the server, nor the server from A
            cut = time.monotonic()
            with pytest.raises(MasterLocked, match="master A"):
                second.lock_master(RUN, "master B")  # A's session is alive on the server: no second master
            retry_while_locked(lambda: second.lock_master(RUN, "master B"), within=lock_timeout * 10)
            assert time.monotonic() - cut >= lock_timeout * 0.9  # the server ended A's silent session, and its lock
            assert not first._masters[RUN].holds(time.monotonic())  # ...after A had stopped acting on it
            with pytest.raises(BackendError):
                known(first, message(2))  # A's fence: no transaction while its lock is not sure
            proxy.passing()
            with pytest.raises(MasterLockLost):
                known(first, message(3))  # healed: still none, until A has taken its lock again...
            with pytest.raises(MasterLocked, match="master B"):
                first.lock_master(RUN, "master A")  # ... which it cannot: B has it, so A stops for good
            assert sum(second.counts(RUN).values()) == 1  # only what A did while it held the lock
        finally:
            first.close()
            second.close()


def test_a_master_transaction_after_its_lock_passed_to_another_is_rolled_back(url, database, admin):
    """Partitions, scenario 3: the fence a clock cannot make. A's lock session ended and B took the lock before
    A's keeper could notice (a transaction the network held back arrives so): A's next commit does not land."""
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    try:
        ledger.lock_master(RUN, "master A")
        kill_sessions(admin, database)
        retry_while_locked(lambda: other.lock_master(RUN, "master B"))
        assert ledger._masters[RUN].holds(time.monotonic())  # by A's clock it still holds the lock
        with pytest.raises(MasterLockLost, match="gives it to session"):
            known(ledger, message(1))
        assert other.counts(RUN) == {}  # rolled back
        with pytest.raises(MasterLockLost, match="given up"):
            known(ledger, message(2))  # and no more, until A holds the lock again, which it cannot
        with pytest.raises(MasterLocked, match="master B"):
            ledger.lock_master(RUN, "master A")
    finally:
        ledger.close()
        other.close()


def test_a_master_sessions_idle_transactions_end_before_its_lock_can_pass(url):
    """A COMMIT held back by the network is rolled back by the server before the lock's session can end."""
    ledger, default = MysqlLedger(url + "?lock_timeout=8"), MysqlLedger(url)
    try:
        assert ledger._idle_transaction_limit() == 4  # the session is at most 2 s silent at the cut: 6 s left
        assert default._idle_transaction_limit() == default.idle_transaction_timeout == 15
        conn = ledger._connection()
        with conn.cursor() as cur:
            cur.execute("SELECT @@SESSION.idle_transaction_timeout")
            assert cur.fetchone()[0] == 4
    finally:
        ledger.close()
        default.close()


def test_a_client_cut_off_mid_transaction_frees_its_row_locks_soon(url, database):
    """Partitions: a worker cut off between two statements of a transaction must not stall every claim for hours."""
    with FaultProxy((HOST, PORT)) as proxy:
        cut_off, other = MysqlLedger(mysql_url(database, port=proxy.port)), MysqlLedger(url)
        cut_off.idle_transaction_timeout = 2
        conn = None
        try:
            msg = known(other, message(1))
            conn = cut_off._connect()  # as the ledger makes its connections
            with conn.cursor() as cur:  # a transaction left open on the row: its lock held
                cur.execute("UPDATE swarm_messages SET attempts = attempts WHERE id = %s", (msg.id,))
            proxy.blackhole()
            started = time.monotonic()
            assert other.claim(RUN, PHASE, msg, "w2", LEASE).granted
            assert time.monotonic() - started < other.lock_wait_timeout  # the server ended it; no lock wait gave up
        finally:
            proxy.passing()
            if conn is not None:
                conn.close()
            cut_off.close()
            other.close()


def test_master_holder_goes_by_the_servers_lock_not_the_row_naming_its_holder(url, admin):
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    try:
        with admin.cursor() as cur:  # a row left by a master whose session ended before it could delete it
            cur.execute("INSERT INTO swarm_locks (name, holder, expires_at) VALUES (%s, %s, %s)",
                        (RUN, "host:1:gone master", time.time() + 3600))
        admin.commit()
        assert ledger.master_holder(RUN) is None
        ledger.lock_master(RUN, "master A")
        assert "master A" in ledger.master_holder(RUN)
        with admin.cursor() as cur:  # taken, not yet named
            cur.execute("DELETE FROM swarm_locks WHERE name = %s", (RUN,))
        admin.commit()
        assert other.master_holder(RUN) == UNNAMED_HOLDER
        ledger.close()  # its session ends, and the lock with it, on the server a moment later
        deadline = time.monotonic() + 10
        while other.master_holder(RUN) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert other.master_holder(RUN) is None
    finally:
        ledger.close()
        other.close()


def test_long_lock_names_are_hashed_without_collisions(url):
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    first, second = "r" * 200 + "1", "r" * 200 + "2"
    try:
        assert len(ledger._lock_name("master", first)) <= 64
        ledger.lock_master(first, "master A")
        other.lock_master(second, "master B")
        with pytest.raises(MasterLocked, match="master A"):
            other.lock_master(first, "master B")
    finally:
        ledger.close()
        other.close()


def test_closing_the_ledger_releases_its_lock(url):
    ledger, other = MysqlLedger(url), MysqlLedger(url)
    try:
        ledger.lock_master(RUN, "master A")
        ledger.close()
        retry_while_locked(lambda: other.lock_master(RUN, "master B"))
        known(other, message(1))
        assert other.claim(RUN, PHASE, message(1), "w1", LEASE).state is None  # and it still works
        assert other.counts(RUN) == {MessageState.CLAIMED: 1}
    finally:
        other.close()
