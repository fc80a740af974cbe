"""``swarm config check``: the effective settings, where each came from, and whether each backend answers.

Every probe only reads: the broker is connected to and nothing is declared,
the ledger's schema version is read (a SQLite file read-only, so an older
schema is reported, not migrated), the table store lists its tables. Each
runs on a thread of its own and is given up after ``timeout`` seconds, so a
host that drops packets cannot hang the check.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import urllib.parse
from typing import Any, Callable

from swarm.backends import file_path, open_broker, open_tables, redact
from swarm.config import SECRETS, URLS, Config
from swarm.errors import BackendRefused, ConfigError, SwarmError, describe
from swarm.table import TableStore

OK, PROBLEM, UNREACHABLE = "OK", "PROBLEM", "UNREACHABLE"  # PROBLEM: fix the config or the setup
DEFAULT_TIMEOUT = 10.0
SHOWN_TABLES = 8  # names listed; more are counted
IN_PROCESS = "fine for `swarm run`, not for a fleet: `swarm master` and `swarm worker` refuse it"


@dataclasses.dataclass(frozen=True)
class Finding:
    role: str
    status: str  # OK, PROBLEM or UNREACHABLE
    text: str


# the settings ------------------------------------------------------------------------


def settings(cfg: Config) -> list[tuple[str, str, str]]:
    """``(key, value as shown, where it came from)`` for every setting, secrets masked."""
    shown = cfg.describe()
    rows = []
    for section, values in shown.items():
        if section == "options":
            continue
        for key, value in values.items():
            rows.append((f"{section}.{key}", _value(value), cfg.source_of(f"{section}.{key}")))
    for job, values in sorted(shown.get("options", {}).items()):
        for key, value in values.items():
            rows.append((f"options.{job}.{key}", _value(value), cfg.source_of(f"options.{job}.{key}")))
    return rows


def _value(value: Any) -> str:
    """As it would be written in the TOML file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (str, list, dict)) else str(value)


def config_source(cfg: Config) -> str:
    if cfg.source == "defaults":
        return (f"no config file (no --config, and no swarm.toml in {os.getcwd()}): "
                f"the defaults and SWARM_* variables")
    return os.path.abspath(cfg.source)


# the probes ----------------------------------------------------------------------------


def run_checks(cfg: Config, timeout: float = DEFAULT_TIMEOUT) -> list[Finding]:
    """One finding per backend, then the site key; the probes run at once, all within ``timeout``."""
    urls = cfg["backends"]
    probes: list[tuple[str, Callable[[], str]]] = [
        ("broker", lambda: check_broker(urls["broker"])),
        ("ledger", lambda: check_ledger(urls["ledger"], timeout)),
        ("tables", lambda: check_tables(urls["tables"], timeout)),
        ("site key", lambda: check_site_key(cfg)),
    ]
    running = [_Probe(role, probe) for role, probe in probes]
    deadline = time.monotonic() + timeout
    scrub = _scrubber(cfg)
    return [dataclasses.replace(f, text=scrub(f.text)) for f in (p.finding(deadline, timeout) for p in running)]


class _Probe:
    """A probe on a daemon thread of its own.

    One that does not answer in time is left to finish there: a connect
    that the network drops cannot be interrupted from here.
    """

    def __init__(self, role: str, probe: Callable[[], str]):
        self.role, self._probe = role, probe
        self._text: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"swarm-check-{role}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._text = self._probe()
        except BaseException as exc:  # reported, never raised: the other probes still count
            self._error = exc

    def finding(self, deadline: float, timeout: float) -> Finding:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            return Finding(self.role, UNREACHABLE, f"no answer within {timeout:g} s")
        error = self._error
        if error is None:
            return Finding(self.role, OK, self._text or "")
        if isinstance(error, (ConfigError, BackendRefused)):  # refused: a password, a grant, a certificate
            return Finding(self.role, PROBLEM, str(error))
        return Finding(self.role, UNREACHABLE, str(error) if isinstance(error, SwarmError) else describe(error))


def check_broker(url: str) -> str:
    if url.startswith("memory:"):
        return f"in-process ({url}): {IN_PROCESS}"
    broker = open_broker(url, serve=False)
    try:
        return f"{redact(url)}: connected to {broker.ping()}"
    finally:
        broker.close()


def check_ledger(url: str, timeout: float) -> str:
    from swarm.ledgers.sql import SCHEMA_VERSION

    if url.startswith("sqlite:"):
        path = file_path(url)
        if path == ":memory:":
            return f"in-process ({url}): each process has a ledger of its own; {IN_PROCESS}"
        where = os.path.abspath(path)
        version = _sqlite_version(path)
    else:
        where = redact(url)
        version = _mysql_version(url, timeout)
    if version is None:
        raise ConfigError(f"{where} holds no Swarm schema: `swarm db init` (as the ledger's admin user) creates it")
    if version < SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema version {version}, older than this Swarm's {SCHEMA_VERSION}: "
                          f"run `swarm db migrate` as the ledger's admin user")
    if version > SCHEMA_VERSION:
        raise ConfigError(f"{where}: schema version {version}, newer than this Swarm's {SCHEMA_VERSION}: "
                          f"upgrade Swarm on this host")
    return f"{where}: schema version {version}, this Swarm's"


def _sqlite_version(path: str) -> int | None:
    from swarm.errors import LedgerNotFound
    from swarm.ledgers.sqlite import stored_schema_version

    try:
        return stored_schema_version(path)
    except LedgerNotFound as exc:
        raise LedgerNotFound(f"{exc}: `swarm db init` creates it (`swarm run` and `swarm master` "
                             f"create a SQLite ledger themselves)") from None


def _mysql_version(url: str, timeout: float) -> int | None:
    from swarm.ledgers.mysql import MysqlLedger

    ledger = MysqlLedger(url)
    ledger.attempts = 1  # the check reports the first failure rather than retrying past its timeout
    ledger.connect_timeout = max(1, int(timeout))
    try:
        return ledger.stored_schema_version()
    finally:
        ledger.close()


def check_tables(url: str, timeout: float) -> str:
    if url.startswith("embedded:"):
        path = file_path(url)
        if path == ":memory:":
            return f"in-process ({url}): each process has tables of its own; {IN_PROCESS}"
        if not os.path.isfile(path):
            raise ConfigError(f"no table store at {os.path.abspath(path)} yet: `swarm tables create JOB` makes "
                              f"it with the job's tables")
    store = open_tables(url)
    if url.startswith("hbase:"):  # not otherwise: importing the HBase client takes a fifth of a second
        _try_once(store, timeout)
    silent = ""
    try:
        names, silent = _each_server(store, timeout) if url.startswith("hbase:") else (None, "")
        if names is None:
            names = store.tables()
    finally:
        store.close()
    return f"{redact(url)}: {len(names)} table(s)" + (f": {_names(names)}" if names else "") + silent


def _each_server(store: TableStore, timeout: float) -> tuple[list[str] | None, str]:
    """With several Thrift servers, each one's answer: the tables, and which ones did not answer and why.

    Every server failing is the store failing (``BackendError``); some failing is said, but the store works.
    """
    from swarm.errors import BackendError
    from swarm.tables.hbase import HBaseTables

    if not isinstance(store, HBaseTables) or len(store.servers) < 2:
        return None, ""
    answers = store.each_server(store.timeout_ms)
    failed = {name: answer for name, answer in answers.items() if isinstance(answer, Exception)}
    if len(failed) == len(answers):
        raise BackendError(f"HBase at {store.where}: no Thrift server answered: "
                           + "; ".join(str(e).split(": ", 1)[-1] for e in failed.values()))
    names = next(answer for answer in answers.values() if not isinstance(answer, Exception))
    if not failed:
        return names, f"; all {len(answers)} Thrift servers answered"
    said = "; ".join(f"{name} did not answer ({str(e).split(': ', 1)[-1]})" for name, e in failed.items())
    return names, f"; {len(answers) - len(failed)} of {len(answers)} Thrift servers answered; {said}"


def _try_once(store: TableStore, timeout: float) -> None:
    """One try (through each server the URL names), within the check's time, rather than retrying past it."""
    from swarm.tables.hbase import HBaseTables

    if isinstance(store, HBaseTables):  # one try per Thrift server the URL names, sharing the time
        tries = len(store.servers)
        store.retries, store.timeout_ms = tries - 1, max(1, int(timeout * 1000 / tries))
        store.backoff = 0


def _names(names: list[str]) -> str:
    more = len(names) - SHOWN_TABLES
    return ", ".join(names[:SHOWN_TABLES]) + (f" and {more} more" if more > 0 else "")


def check_site_key(cfg: Config) -> str:
    from swarm.signing import for_site, from_settings

    url = cfg["backends"]["broker"]
    if from_settings(cfg["security"]) is None and url.startswith("memory:"):
        return "none set: with the in-process broker each process makes a key of its own"
    keys = for_site(cfg["security"], url)
    security = cfg["security"]
    rotating = bool(security["previous_key_file"] or security["previous_key"])
    return f"key id {keys.current_id}" + (", and a previous key (rotating)" if rotating else "")


def _scrubber(cfg: Config) -> Callable[[str], str]:
    """Hides the URLs' passwords and the site keys, should an error from a library ever quote one."""
    secrets = set()
    for dotted in URLS:
        section, key = dotted.split(".")
        password = urllib.parse.urlsplit(cfg[section][key]).password
        if password:
            secrets |= {password, urllib.parse.unquote(password)}
    secrets |= {cfg[section][key] for section, key in SECRETS if cfg[section][key]}
    # Short ones are left alone, as the brokers do: they would hide ordinary words (a user "guest").
    ordered = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def scrub(text: str) -> str:
        for secret in ordered:
            text = text.replace(secret, "***")
        return text

    return scrub


def exit_status(findings: list[Finding]) -> str:
    """The worst finding's status: a config problem before an unreachable backend."""
    statuses = {f.status for f in findings}
    return next((s for s in (PROBLEM, UNREACHABLE) if s in statuses), OK)
