"""Which failures to connect to RabbitMQ are refusals (fix the config) and which are outages (try again)."""
import pika.exceptions as pe
import pytest

from swarm.brokers.rabbitmq.errors import describe as _describe
from swarm.brokers.rabbitmq.errors import is_refusal as _refused


@pytest.mark.parametrize("error, reason", [
    (pe.ProbableAuthenticationError(repr(pe.ConnectionClosedByBroker(403, "ACCESS_REFUSED - Login was refused"))),
     "login refused"),
    (pe.ProbableAccessDeniedError(repr(pe.ConnectionClosedByBroker(530, "NOT_ALLOWED - vhost not found"))),
     "access refused"),
])
def test_the_brokers_own_refusal_is_not_retried(error, reason):
    assert _refused(error)
    assert _describe(error).startswith(reason)


@pytest.mark.parametrize("kind", [pe.ProbableAuthenticationError, pe.ProbableAccessDeniedError])
def test_a_connection_lost_while_logging_in_is_an_outage_not_a_refusal(kind):
    # What pika reports when RabbitMQ shuts down or restarts during the handshake.
    error = kind(repr(pe.StreamLostError("Stream connection lost: ConnectionResetError(104, 'Connection reset')")))
    assert not _refused(error)
    assert _describe(error).startswith("the connection was lost while logging in")
