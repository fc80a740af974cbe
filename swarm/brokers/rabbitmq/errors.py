"""What pika's errors mean, worded for an operator, and which of them retrying cannot fix."""
from __future__ import annotations

import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from swarm import tls as tls_support
from swarm.errors import BackendError


class ConnectionLost(BackendError):
    """The connection is gone; the call may succeed on a new one."""


def describe(error: BaseException | None) -> str:
    """A short reason for a pika connection or channel error."""
    error = root_cause(error)
    if isinstance(error, pika.exceptions.ProbableAuthenticationError) and closed_by_broker(error):
        return f"login refused; check the user and password ({error})"
    if isinstance(error, pika.exceptions.ProbableAccessDeniedError) and closed_by_broker(error):
        return f"access refused; check that the vhost exists and the user may use it ({error})"
    if isinstance(error, (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)):
        return f"the connection was lost while logging in ({error})"
    if isinstance(error, (pika.exceptions.ConnectionClosedByBroker, pika.exceptions.ChannelClosedByBroker)):
        return f"closed by the broker: {error.reply_code} {error.reply_text}"
    if isinstance(error, (pika.exceptions.ConnectionClosed, pika.exceptions.ChannelClosed)):
        return f"closed: {error.reply_code} {error.reply_text}"
    if isinstance(error, pika.exceptions.AMQPHeartbeatTimeout):
        return "no heartbeat from the broker"
    if isinstance(error, pika.exceptions.ConnectionBlockedTimeout):
        return "blocked by a broker resource alarm for longer than blocked_connection_timeout"
    return f"{type(error).__name__}: {error}" if error is not None else "closed"


def describe_connect_error(error: BaseException | None) -> str:
    """Why a connection could not be opened: a TLS failure says so, with the options to check."""
    tls = tls_support.failure(root_cause(error))
    if tls is None:
        return describe(error)
    if tls.startswith("TLS verification"):
        return f"{tls} (check the URL's ssl_ca and ssl_server_name)"
    return tls


def is_refusal(error: BaseException) -> bool:
    """The broker refused the login or the vhost, or its certificate did not verify: retrying will not help."""
    root = root_cause(error)
    refusals = (pika.exceptions.ProbableAuthenticationError, pika.exceptions.ProbableAccessDeniedError)
    if isinstance(root, refusals):
        return closed_by_broker(root)
    return (tls_support.failure(root) or "").startswith("TLS verification")


def closed_by_broker(error: BaseException) -> bool:
    """Whether pika's guess of a refused login or vhost rests on the broker's own close (403 or 530).

    pika makes the same guess when the connection is merely lost during the
    handshake, as when RabbitMQ is shutting down or restarting: an outage.
    """
    return str(error).startswith("ConnectionClosedByBroker: (")


def root_cause(error: BaseException | None) -> BaseException | None:
    """The error under pika's connection-workflow wrappers."""
    while True:
        inner = getattr(error, "exception", None)  # a connector phase error's cause
        if isinstance(error, AMQPConnectionWorkflowFailed) and error.exceptions:
            error = error.exceptions[-1]
        elif isinstance(inner, BaseException):
            error = inner
        elif error is not None and type(error) is pika.exceptions.AMQPConnectionError and error.args \
                and isinstance(error.args[0], BaseException):
            error = error.args[0]
        else:
            return error
