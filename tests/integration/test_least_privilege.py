"""The grants shipped in deploy/grants are enough for the whole fleet, and no more.

The users are made by running the shipped scripts themselves against the
test's own vhost and database; `swarm db init` runs as the admin user, and
everything else (master, workers, status, dlq) as the runtime users only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import uuid

import pika
import pika.exceptions
import pymysql
import pytest

from swarm.backends import open_ledger
from swarm.broker import dead_letter_queue, stage_queue
from swarm.ledgers import sql
from tests.support import ROOT
from tests.support.mysql import MYSQL, mysql_admin, mysql_url
from tests.support.rabbitmq import amqp_url, await_broker, rabbitmqctl
from tests.support.site import DATE, JOB, Site, log_tail
from tests.support.waiting import wait_until

GRANTS = ROOT / "deploy" / "grants"
EVENTS = 4_000
RUN = f"{JOB}@date={DATE}"
ACCESS_REFUSED = 403
TABLE_ACCESS_DENIED, DB_ACCESS_DENIED = 1142, 1044


@dataclasses.dataclass(frozen=True)
class Account:
    user: str
    password: str


@dataclasses.dataclass(frozen=True)
class DbUsers:
    database: str
    runtime: Account
    admin: Account

    def url(self, who: Account) -> str:
        return mysql_url(self.database, who.user, who.password)


def _secret() -> str:
    # a quote in it: the MySQL script must get its SQL quoting right
    return uuid.uuid4().hex + "'q"


@pytest.fixture
def db_users(mysql_db):
    """The runtime and admin users, made by piping mysql-grants.sh into the mysql client as root."""
    tag = uuid.uuid4().hex[:8]
    users = DbUsers(mysql_db, Account(f"swarm_rt_{tag}", _secret()), Account(f"swarm_adm_{tag}", _secret()))
    env = dict(os.environ, LEDGER_PASSWORD=users.runtime.password, LEDGER_ADMIN_PASSWORD=users.admin.password)
    sql = subprocess.run(["sh", str(GRANTS / "mysql-grants.sh"), mysql_db, users.runtime.user, users.admin.user,
                          "127.0.0.1"], env=env, capture_output=True, text=True, check=True).stdout
    try:
        _mysql_client(sql)
        yield users
    finally:
        conn = mysql_admin()
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{users.runtime.user}'@'127.0.0.1', '{users.admin.user}'@'127.0.0.1'")
        conn.close()


def _mysql_client(sql: str) -> None:
    client = shutil.which("mariadb") or shutil.which("mysql")
    if client is None:
        pytest.fail("no mysql client: run `make services`")
    done = subprocess.run([client, f"--host={MYSQL['host']}", f"--port={MYSQL['port']}", f"--user={MYSQL['user']}"],
                          input=sql, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def mq_user(amqp_vhost):
    """A broker user made by rabbitmq-grants.sh for the test's vhost."""
    account = Account(f"swarm-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex)
    _run_rabbitmq_script(amqp_vhost, account)
    try:
        yield account
    finally:
        await_broker()
        rabbitmqctl("delete_user", account.user)


def _run_rabbitmq_script(vhost: str, account: Account) -> None:
    # Other tests restart the broker now and then; the script is safe to run again.
    env = dict(os.environ, BROKER_PASSWORD=account.password)
    for _ in range(3):
        await_broker()
        done = subprocess.run(["sh", str(GRANTS / "rabbitmq-grants.sh"), vhost, account.user], env=env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            return
    pytest.fail(f"rabbitmq-grants.sh failed: {done.stderr}")


def broker_url(vhost: str, account: Account, **options: object) -> str:
    return amqp_url(vhost, user=account.user, password=account.password, **options)


# the fleet on the runtime users ------------------------------------------------------


@pytest.fixture
def site(tmp_path, amqp_vhost, hbase_server, db_users, mq_user):
    # fault_every: some handlers fail once, so retries go round the delay queues and back
    site = Site(tmp_path, amqp_vhost, db_users.database, hbase_server, {"chunks": 8, "fault_every": 5},
                broker=broker_url(amqp_vhost, mq_user, heartbeat=5), ledger=db_users.url(db_users.runtime))
    site.init_ledger(env={"SWARM_BACKENDS_LEDGER": db_users.url(db_users.admin)})
    site.generate(EVENTS)
    yield site
    site.stop()


def test_the_fleet_runs_the_nightly_job_on_the_runtime_grants(site, db_users, mq_user):
    for _ in range(2):
        site.start_worker()
    master = site.start_master()
    try:
        code = master.wait(timeout=180)
    except subprocess.TimeoutExpired:
        master.kill()
        raise AssertionError(f"master did not finish\n{site.log_tail()}") from None
    assert code == 0, site.log_tail()
    written, expected = site.exact()
    assert len(expected) == 40
    assert written == expected

    status = _cli_json(site, "status", RUN)
    assert status["run"]["status"] == "done"
    assert status["counters"] == {"rows": EVENTS, "merchants": 40}  # nothing counted twice
    assert all(isinstance(s["depth"], int) for s in status["stages"].values()), status["stages"]
    assert status["failures"] == []  # the run is done: every fault was retried to success
    assert any("injected fault" in (f["error"] or "") for f in status["recovered"]), "no retry went round"

    _dead_letter_a_bad_message(site, mq_user)
    dead = _cli_json(site, "dlq", "list", "--job", JOB)
    assert [(d["queue"], "not valid msgpack" in d["reason"]) for d in dead] == [(stage_queue(JOB, "scan"), True)]
    assert [r["id"] for r in _cli_json(site, "runs")] == [RUN]

    logs = log_tail(site.logs, lines=10_000)
    for secret in (mq_user.password, db_users.runtime.password, db_users.admin.password):
        assert secret not in logs


def _cli_json(site: Site, *args: str):
    done = site.cli(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _dead_letter_a_bad_message(site: Site, account: Account) -> None:
    """Publish an undecodable message as the runtime user; a worker dead-letters it to the stage's dlq."""
    queue = stage_queue(JOB, "scan")
    with _channel(site.vhost, account) as channel:
        channel.confirm_delivery()
        channel.basic_publish("", queue, b"\xc1 not msgpack", pika.BasicProperties(delivery_mode=2))
        wait_until(lambda: channel.queue_declare(dead_letter_queue(queue), passive=True).method.message_count == 1,
                   "the dead letter", timeout=30, every=0.1)


@contextlib.contextmanager
def _channel(vhost: str, account: Account):
    conn = pika.BlockingConnection(pika.URLParameters(broker_url(vhost, account)))
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


# and no more ---------------------------------------------------------------------------


def test_the_ledger_users_get_rows_and_the_schema_of_their_database_only(db_users):
    admin = open_ledger(db_users.url(db_users.admin))
    try:
        assert admin.migrate() == list(range(1, sql.SCHEMA_VERSION + 1))  # every step, ALTER and INDEX included
    finally:
        admin.close()
    assert _schema_privileges(db_users.runtime) == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert _schema_privileges(db_users.admin) == {"SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "ALTER", "INDEX"}

    for statement in ("CREATE TABLE swarm_extra (id INT)", "DROP TABLE swarm_counters",
                      "ALTER TABLE swarm_runs ADD COLUMN extra INT", "CREATE INDEX extra ON swarm_runs (job)"):
        assert _refused(db_users, db_users.runtime, statement) == TABLE_ACCESS_DENIED, statement
    assert _refused(db_users, db_users.admin, "DROP TABLE swarm_counters") == TABLE_ACCESS_DENIED
    for who in (db_users.runtime, db_users.admin):
        assert _refused(db_users, who, "SELECT COUNT(*) FROM mysql.user") == TABLE_ACCESS_DENIED
        assert _cannot_use_lookalike(db_users, who) == DB_ACCESS_DENIED


def _schema_privileges(who: Account) -> set[str]:
    """Every privilege ``who`` holds, asserting it holds them on the database level only."""
    conn = mysql_admin()
    grantee = f"'{who.user}'@'127.0.0.1'"
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT privilege_type FROM information_schema.user_privileges WHERE grantee = %s", (grantee,))
            assert {r[0] for r in cur.fetchall()} == {"USAGE"}  # nothing server-wide
            cur.execute("SELECT COUNT(*) FROM information_schema.table_privileges WHERE grantee = %s", (grantee,))
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT table_schema, privilege_type FROM information_schema.schema_privileges "
                        "WHERE grantee = %s", (grantee,))
            rows = cur.fetchall()
    finally:
        conn.close()
    assert len({schema for schema, _ in rows}) == 1
    return {privilege for _, privilege in rows}


def _refused(users: DbUsers, who: Account, statement: str) -> int | None:
    """The MySQL error code ``statement`` fails with as ``who``; None if it ran."""
    conn = pymysql.connect(**(MYSQL | {"user": who.user, "password": who.password}), database=users.database)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    except pymysql.MySQLError as exc:
        return exc.args[0]
    finally:
        conn.close()
    return None


def _cannot_use_lookalike(users: DbUsers, who: Account) -> int | None:
    """Whether ``who`` is kept out of a database whose name matches its own with `_` as a wildcard."""
    lookalike = users.database.replace("_", "x")
    root = mysql_admin()
    try:
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{lookalike}`")
        try:
            pymysql.connect(**(MYSQL | {"user": who.user, "password": who.password}), database=lookalike).close()
        except pymysql.MySQLError as exc:
            return exc.args[0]
        return None
    finally:
        with root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{lookalike}`")
        root.close()


def test_the_broker_user_is_kept_to_swarm_queues_in_its_vhost(amqp_vhost, mq_user):
    listed = rabbitmqctl("-q", "list_user_permissions", "--no-table-headers", mq_user.user)
    assert listed.split("\n")[0].split("\t") == [amqp_vhost, r"^swarm\.", r"^amq\.default$", r"^swarm\."]
    assert len(listed.strip().splitlines()) == 1  # one vhost: its own

    assert _refusal(amqp_vhost, mq_user, lambda ch: ch.queue_declare("other.queue", durable=True)) == ACCESS_REFUSED
    assert _refusal(amqp_vhost, mq_user, lambda ch: ch.exchange_declare("other.fanout", "fanout")) == ACCESS_REFUSED
    assert _refusal(amqp_vhost, mq_user, _publish_to_topic_exchange) == ACCESS_REFUSED
    _declare_as_guest(amqp_vhost, "other.queue")
    assert _refusal(amqp_vhost, mq_user, lambda ch: ch.basic_get("other.queue")) == ACCESS_REFUSED
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
        pika.BlockingConnection(pika.URLParameters(broker_url("%2F", mq_user))).close()


def _refusal(vhost: str, account: Account, action) -> int | None:
    """The reply code the broker closes the channel with when ``action(channel)`` runs; None if it is allowed."""
    with _channel(vhost, account) as channel:
        try:
            action(channel)
        except pika.exceptions.ChannelClosedByBroker as exc:
            return exc.reply_code
    return None


def _publish_to_topic_exchange(channel) -> None:
    channel.confirm_delivery()
    channel.basic_publish("amq.topic", "swarm.anything", b"x")


def _declare_as_guest(vhost: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    try:
        conn.channel().queue_declare(queue, durable=True)
    finally:
        conn.close()


def test_the_whole_night_under_supervisord_and_its_autoscaler_on_the_documented_grants(site):
    """As the README sets a site up: workers and the autoscaler under supervisord, the master from swarm-nightly."""
    from tests.integration.test_supervisor import nightly
    from tests.support.supervisord import Supervisord

    sv = Supervisord(site, 2, autoscale={"min": 1, "max": 2, "interval": 0.5, "up_depth": 2})
    sv.start()
    try:
        wait_until(lambda: len(sv.running()) >= 1, "the autoscaler's first worker", timeout=30, every=0.1)
        master = nightly(site, "nightly.log")
        out, err = master.communicate(timeout=240)
        assert master.returncode == 0, f"{out}\n{err}\n{sv.log_tail()}"
        written, expected = site.exact()
        assert written == expected and len(expected) == 40
    finally:
        sv.stop()
