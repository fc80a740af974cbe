"""The broker URL: ``amqp://user:pass@host:port/vhost?option=value``, or ``amqps://`` for TLS.

The vhost is URL-encoded (``%2F`` for ``/``). Every pika ``URLParameters``
query option works (``heartbeat``, ``connection_attempts``,
``socket_timeout``...) except ``ssl_options``: TLS takes Swarm's options
below. ``blocked_connection_timeout`` defaults to 60 s: it bounds how long a
publish waits while a memory or disk alarm blocks publishers (then it fails
with ``BackendError``, and pika closes a connection blocked that long).
``tcp_options`` defaults to TCP keepalive (``TCP_KEEPIDLE`` 60 s, then
``TCP_KEEPCNT`` 6 probes ``TCP_KEEPINTVL`` 10 s apart): heartbeats flow only
while a connection is pumped, and the blocking broker's is not between calls,
so it is the kernel that finds such an idle connection dead (give
``tcp_options={}`` for none). Every call is bounded: connecting by
``socket_timeout`` (10 s, TCP) and ``stack_timeout`` (15 s, the whole
handshake), a reply by ``reply_timeout``, a live connection by ``heartbeat``.
Swarm adds:

``delivery_limit=20``     deliveries a quorum stage queue allows a message
                          before the broker dead-letters it to ``Q.dlq``
``reply_timeout=60``      seconds a call waits for the broker's confirms or
                          replies before raising ``BackendError``
``consumer_timeout=1800`` the server's ``consumer_timeout`` in seconds (AMQP
                          cannot read it; ``0`` means disabled), used by
                          ``consumer_timeout_note``

and, with ``amqps://`` only (TLS, port 5671 by default), the options of
``swarm.tls``: ``ssl_ca``, ``ssl_cert``, ``ssl_key``, ``ssl_server_name``
(the name the certificate must carry, also sent as SNI; default the URL's
host) and ``ssl_verify_identity=false`` (skip the name check; the chain is
checked in any case).
"""
from __future__ import annotations

import dataclasses
import socket
import urllib.parse
from typing import Any

import pika

from swarm import tls as tls_support
from swarm.brokers.rabbitmq.errors import describe
from swarm.errors import BackendError, ConfigError
from swarm.urls import redact

DEFAULT_CONSUMER_TIMEOUT = 1800.0  # RabbitMQ's own default, in seconds
BLOCKED_CONNECTION_TIMEOUT = 60.0
SWARM_OPTIONS = {"delivery_limit": 20, "reply_timeout": 60.0, "consumer_timeout": DEFAULT_CONSUMER_TIMEOUT}
# TCP keepalive on every broker connection unless the URL sets tcp_options (only what this OS knows).
KEEPALIVE = {name: value for name, value in (("TCP_KEEPIDLE", 60), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 6))
             if hasattr(socket, name)}
TLS_OPTIONS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_server_name", "ssl_verify_identity")


@dataclasses.dataclass(frozen=True)
class BrokerOptions:
    """What a broker URL says: pika's parameters, Swarm's options, and how to name the broker in errors."""

    params: pika.URLParameters
    delivery_limit: int
    reply_timeout: float
    consumer_timeout: float
    label: str = ""  # the URL with its password masked: the only form logged
    secret: str | None = dataclasses.field(default=None, repr=False)  # the password, kept out of messages

    @property
    def blocked_wait(self) -> float:
        """Seconds a publish waits while a resource alarm blocks its connection: ``blocked_connection_timeout``."""
        return float(self.params.blocked_connection_timeout or self.reply_timeout)

    def error(self, text: str, kind: type[BackendError] = BackendError) -> BackendError:
        """An error naming this broker, with the password scrubbed from ``text``."""
        return kind(f"RabbitMQ at {self.label}: {scrub(text, self.secret)}")

    def explain(self, error: BaseException) -> str:
        """An error as logged: ours already name the broker; pika's get its name added."""
        if isinstance(error, BackendError):
            return str(error)
        return str(self.error(describe(error)))


def parse_url(url: str) -> BrokerOptions:
    """pika's parameters plus Swarm's own query options; ``ConfigError`` names what is wrong."""
    where = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    except ValueError as e:
        raise ConfigError(f"broker: cannot parse {where!r}: {e}") from None
    if "ssl_options" in query:
        raise ConfigError(f"broker: option ssl_options is not supported; use amqps:// with ssl_ca, ssl_cert "
                          f"and ssl_key (in {where})")
    ours = {name: query.pop(name)[-1] for name in list(query) if name in SWARM_OPTIONS}
    tls = {name: query.pop(name)[-1] for name in list(query) if name in TLS_OPTIONS}
    rest = parts._replace(query=urllib.parse.urlencode(query, doseq=True))
    try:
        params = pika.URLParameters(urllib.parse.urlunsplit(rest))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"broker: {scrub(str(e), parts.password)} (in {where})") from None
    if "blocked_connection_timeout" not in query:
        params.blocked_connection_timeout = BLOCKED_CONNECTION_TIMEOUT
    if "tcp_options" not in query:
        params.tcp_options = dict(KEEPALIVE) or None
    params.ssl_options = ssl_options(parts.scheme, params.host, tls, where)
    return BrokerOptions(params, **_swarm_options(ours, where), label=where, secret=parts.password)


def _swarm_options(given: dict[str, str], where: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, default in SWARM_OPTIONS.items():
        raw = given.get(name)
        try:
            values[name] = type(default)(raw) if raw is not None else default
        except ValueError:
            raise ConfigError(f"broker: option {name}={raw!r} is not a number (in {where})") from None
        if values[name] < 0 or (values[name] == 0 and name != "consumer_timeout"):
            raise ConfigError(f"broker: option {name} must be positive (in {where})")
    return values


def ssl_options(scheme: str, host: str, tls: dict[str, str], where: str) -> pika.SSLOptions | None:
    """The TLS settings of an ``amqps://`` URL; None for ``amqp://``, which takes no TLS option."""
    if scheme.lower() != "amqps":
        if tls:
            raise ConfigError(f"broker: option {', '.join(sorted(tls))} needs an amqps:// URL (in {where})")
        return None
    check = tls_support.flag("broker", "ssl_verify_identity", tls.get("ssl_verify_identity"), default=True)
    context = tls_support.client_context("broker", tls, check_hostname=check)
    # pika gives server_hostname to wrap_socket: it is the name checked and the SNI sent.
    return pika.SSLOptions(context, tls.get("ssl_server_name") or host)


def scrub(text: str, secret: str | None) -> str:
    """A library's error ``text`` without the password, should it ever quote it.

    Secrets shorter than six characters are left alone: they collide with ordinary words.
    """
    if not secret or len(secret) < 6:
        return text
    for form in {secret, urllib.parse.unquote(secret)}:
        text = text.replace(form, "***")
    return text
