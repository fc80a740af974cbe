"""A RabbitMQ node and a MariaDB server of the tests' own, each speaking only TLS with client certificates.

They run from the Debian packages' programs beside the shared services,
with every file (config, data, logs, Erlang cookie) in a temporary folder
and their own ports, so they neither touch nor disturb the shared
instances. Each starts in a few seconds; one that does not come up in
``START_TIMEOUT`` fails the test with the tail of its log.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import urllib.parse
from pathlib import Path
from typing import Callable

import pymysql
import pytest

from tests.support.net import HOST, free_port, listening
from tests.support.pki import Pki
from tests.support.waiting import wait_until

START_TIMEOUT = 60.0  # seconds; a node boots in under 10 on a busy 2-core machine
STOP_TIMEOUT = 30.0


def program(name: str, *places: str) -> str:
    """The path of ``name``: the first of ``places`` that exists, else from PATH."""
    for place in places:
        if os.access(place, os.X_OK):
            return place
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make services`")
    return found


def log_tail(*paths: Path, lines: int = 50) -> str:
    out = []
    for path in paths:
        if path.exists():
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(text))
    return "\n".join(out) or "(no log written)"


def wait_up(what: str, proc: subprocess.Popen, ready: Callable[[], bool], logs: tuple[Path, ...]) -> None:
    """Wait until ``ready()``; fail with the log tail if ``proc`` exits or time runs out."""
    def up() -> bool:
        if ready():
            return True
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with status {proc.returncode} while starting:\n{log_tail(*logs)}")
        return False

    try:
        wait_until(up, what, timeout=START_TIMEOUT, every=0.2)
    except AssertionError:
        stop_group(proc)
        pytest.fail(f"{what} did not come up within {START_TIMEOUT:.0f} s:\n{log_tail(*logs)}")


def stop_group(proc: subprocess.Popen) -> None:
    """End ``proc``, started in a session of its own, and whatever it started in that session."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(STOP_TIMEOUT)


# RabbitMQ --------------------------------------------------------------------------------------

# Debian's /usr/sbin scripts switch to the rabbitmq user and its Erlang cookie; the node here runs
# as the test's user with a cookie of its own, so the package's real scripts are called directly.
RABBIT_BIN = "/usr/lib/rabbitmq/bin"


class RabbitNode:
    """A RabbitMQ node listening on TLS only (``verify_peer``, ``fail_if_no_peer_cert``); user ``swarm``."""

    def __init__(self, folder: Path, pki: Pki):
        self.folder, self.pki = folder, pki
        self.name = f"swarm-tls-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.user, self.password = "swarm", secrets.token_hex(12)
        self.out = folder / "server.out"
        self.proc: subprocess.Popen | None = None

    def url(self, host: str = HOST, password: str | None = None, **options: object) -> str:
        """``amqps://`` to the default vhost with ``options``; ``password=""`` leaves the password out."""
        secret = self.password if password is None else password
        auth = f"{self.user}:{secret}" if secret else self.user
        query = urllib.parse.urlencode({k: str(v) for k, v in options.items()})
        return f"amqps://{auth}@{host}:{self.port}/%2F" + (f"?{query}" if query else "")

    def start(self) -> None:
        home = self.folder / "home"
        for sub in ("home", "mnesia", "log"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        (self.folder / "enabled_plugins").write_text("[].\n")
        (self.folder / "rabbitmq-env.conf").write_text("")
        (self.folder / "rabbitmq.conf").write_text(self._config())
        env = dict(
            os.environ, HOME=str(home), RABBITMQ_NODENAME=self.name, RABBITMQ_NODE_PORT=str(free_port()),
            RABBITMQ_DIST_PORT=str(free_port()), RABBITMQ_MNESIA_BASE=str(self.folder / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.folder / "log"), RABBITMQ_CONFIG_FILE=str(self.folder / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.folder / "enabled_plugins"),
            # keep the host's /etc/rabbitmq out of it
            RABBITMQ_CONF_ENV_FILE=str(self.folder / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.folder / "advanced.config"),
        )
        server = program("rabbitmq-server", f"{RABBIT_BIN}/rabbitmq-server")
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([server], env=env, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_up(f"RabbitMQ node {self.name}", self.proc, lambda: listening(self.port),
                (self.out, self.folder / "log" / f"{self.name}.log"))

    def _config(self) -> str:
        return (
            "listeners.tcp = none\n"
            f"listeners.ssl.default = {HOST}:{self.port}\n"
            f"ssl_options.cacertfile = {self.pki.ca}\n"
            f"ssl_options.certfile = {self.pki.server_cert}\n"
            f"ssl_options.keyfile = {self.pki.server_key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = true\n"
            f"default_user = {self.user}\n"
            f"default_pass = {self.password}\n"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        ctl = program("rabbitmqctl", f"{RABBIT_BIN}/rabbitmqctl")
        env = dict(os.environ, HOME=str(self.folder / "home"))  # the node's cookie
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run([ctl, "-n", self.name, "stop"], env=env, capture_output=True, timeout=60)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_group(self.proc)


@contextlib.contextmanager
def running(server):
    """``server`` started for the block and stopped after it, also when starting it fails."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


# MariaDB ---------------------------------------------------------------------------------------


class MariaServer:
    """A MariaDB server with TLS and a user ``swarm_tls`` that must connect with a client certificate.

    The user is ``REQUIRE X509``: PyMySQL encrypts opportunistically when it can, so a user that
    only requires SSL would also let in a client given no TLS options.
    """

    def __init__(self, folder: Path, pki: Pki):
        self.folder, self.pki = folder, pki
        self.data = folder / "data"
        self.socket = self.data / "mysqld.sock"
        self.error_log = self.data / "error.log"
        self.port = free_port()
        self.user, self.password, self.database = "swarm_tls", secrets.token_hex(12), "swarm_tls"
        self.proc: subprocess.Popen | None = None
        # mariadbd refuses to run as root: as root it becomes the mysql user, which must read the key.
        self._run_as = ["--user=mysql"] if os.geteuid() == 0 else []

    def url(self, password: str | None = None, **options: object) -> str:
        """``mysql://`` to the server's database with ``options``; ``password=""`` leaves the password out."""
        secret = self.password if password is None else password
        auth = f"{self.user}:{secret}" if secret else self.user
        query = urllib.parse.urlencode({k: str(v) for k, v in options.items()})
        return f"mysql://{auth}@{HOST}:{self.port}/{self.database}" + (f"?{query}" if query else "")

    def admin(self) -> pymysql.connections.Connection:
        """root over the server's socket."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", password="", autocommit=True,
                               connect_timeout=5)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._run_as:
            os.chown(self.pki.server_key, pwd.getpwnam("mysql").pw_uid, -1)
        self._install()
        with open(self.folder / "server.out", "wb") as out:
            self.proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_up("MariaDB", self.proc, self._answers, (self.folder / "server.out", self.error_log))
        self._create_user()

    def _command(self) -> list[str]:
        # --no-defaults first: nothing from the host's /etc/mysql, whose datadir is the shared server's
        return [
            program("mariadbd", "/usr/sbin/mariadbd"), "--no-defaults", f"--datadir={self.data}", *self._run_as,
            *self._options(), f"--port={self.port}", f"--bind-address={HOST}", f"--socket={self.socket}",
            f"--pid-file={self.data / 'mysqld.pid'}", f"--log-error={self.error_log}", "--skip-name-resolve",
            f"--ssl-ca={self.pki.ca}", f"--ssl-cert={self.pki.server_cert}", f"--ssl-key={self.pki.server_key}",
        ]

    @staticmethod
    def _options() -> list[str]:
        return ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"]  # small: quick to create

    def _install(self) -> None:
        install = program("mariadb-install-db", "/usr/bin/mariadb-install-db")
        done = subprocess.run(
            [install, "--no-defaults", *self._run_as, f"--datadir={self.data}", "--skip-test-db",
             "--auth-root-authentication-method=normal", *self._options()],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            pytest.fail(f"mariadb-install-db failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")

    def _answers(self) -> bool:
        try:
            self.admin().close()
        except pymysql.MySQLError:
            return False
        return True

    def _create_user(self) -> None:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {self.database}")
                cur.execute(f"CREATE USER '{self.user}'@'%%' IDENTIFIED BY %s REQUIRE X509", (self.password,))
                cur.execute(f"GRANT ALL ON {self.database}.* TO '{self.user}'@'%'")
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # a clean shutdown
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop_group(self.proc)
