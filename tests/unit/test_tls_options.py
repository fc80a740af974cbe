"""TLS options of the broker and ledger URLs: what they turn into, and what a mistake says."""
from __future__ import annotations

import ssl
import urllib.parse

import pika
import pymysql
import pytest

from swarm.brokers.rabbitmq import _describe_connect, _parse_url
from swarm.errors import ConfigError
from swarm.ledgers.mysql import describe, parse_url, transient
from tests.support.pki import Pki, make_pki, openssl

SECRET = "hunter2-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def amqps(**options: object) -> str:
    return f"amqps://swarm:{SECRET}@mq1.example.com/%2F?" + urllib.parse.urlencode(options)


def mysql(**options: object) -> str:
    return f"mysql://swarm:{SECRET}@db1.example.com:3306/swarm?" + urllib.parse.urlencode(options)


def config_error(parse, url: str) -> str:
    """The message of the ``ConfigError`` that parsing ``url`` raises; it never shows the password."""
    with pytest.raises(ConfigError) as err:
        parse(url)
    text = str(err.value)
    assert SECRET not in text, text
    return text


# -- the broker ----------------------------------------------------------------------------------


def test_amqps_builds_a_verifying_context_with_the_client_certificate(pki):
    params = _parse_url(amqps(ssl_ca=pki.ca, ssl_cert=pki.client_cert, ssl_key=pki.client_key)).params
    assert isinstance(params.ssl_options, pika.SSLOptions)
    context = params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert params.ssl_options.server_hostname == "mq1.example.com"  # the URL's host, by default
    assert params.port == 5671
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "Swarm test CA"),),)]


def test_amqps_without_a_ca_trusts_the_systems_cas():
    context = _parse_url("amqps://swarm:pw@mq1/%2F").params.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_the_name_checked_can_be_another_or_none(pki):
    named = _parse_url(amqps(ssl_ca=pki.ca, ssl_server_name="rabbit.internal")).params.ssl_options
    assert named.server_hostname == "rabbit.internal" and named.context.check_hostname
    unchecked = _parse_url(amqps(ssl_ca=pki.ca, ssl_verify_identity="false")).params.ssl_options
    assert not unchecked.context.check_hostname and unchecked.context.verify_mode == ssl.CERT_REQUIRED


def test_the_tls_options_leave_the_others_to_pika(pki):
    opts = _parse_url(amqps(ssl_ca=pki.ca, heartbeat=7, delivery_limit=5))
    assert opts.params.heartbeat == 7 and opts.delivery_limit == 5


def test_plain_amqp_has_no_tls():
    assert _parse_url("amqp://swarm:pw@mq1/%2F").params.ssl_options is None


@pytest.mark.parametrize("url, says", [
    (lambda pki: f"amqp://swarm:{SECRET}@mq1/%2F?ssl_ca={pki.ca}", "ssl_ca needs an amqps:// URL"),
    (lambda pki: amqps(ssl_options="{}"), "ssl_options is not supported"),
    (lambda pki: amqps(ssl_ca="/no/such/ca.pem"), "option ssl_ca: cannot read /no/such/ca.pem"),
    (lambda pki: amqps(ssl_ca=pki.client_key), "client.key holds no PEM certificate"),
    (lambda pki: amqps(ssl_cert="/no/such/c.pem", ssl_key=pki.client_key), "option ssl_cert: cannot read"),
    (lambda pki: amqps(ssl_cert=pki.client_cert, ssl_key="/no/such/k.pem"), "option ssl_key: cannot read"),
    (lambda pki: amqps(ssl_cert=pki.client_cert, ssl_key=pki.server_key),
     "the key does not belong to the certificate"),
    (lambda pki: amqps(ssl_key=pki.client_key), "ssl_key needs ssl_cert"),
    (lambda pki: amqps(ssl_verify_identity="maybe"), "ssl_verify_identity='maybe' must be true or false"),
], ids=["amqp", "ssl_options", "no CA file", "CA not a certificate", "no cert file", "no key file",
        "key mismatch", "key alone", "bad flag"])
def test_broker_tls_mistakes_name_the_option_and_file(pki, url, says):
    assert says in config_error(_parse_url, url(pki))


def test_an_encrypted_key_is_refused_rather_than_prompted_for(pki, tmp_path):
    key = tmp_path / "encrypted.key"
    openssl(tmp_path, "pkey", "-in", str(pki.client_key), "-aes256", "-passout", "pass:pw", "-out", str(key))
    assert "is encrypted" in config_error(_parse_url, amqps(ssl_cert=pki.client_cert, ssl_key=key))


def test_a_verification_failure_is_worded_as_such():
    refused = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    refused.verify_message = "Hostname mismatch, certificate is not valid for 'mq1'."
    text = _describe_connect(pika.exceptions.AMQPConnectionError(refused))
    assert text.startswith("TLS verification failed") and "Hostname mismatch" in text and "ssl_server_name" in text


def test_a_connection_the_server_closes_during_tls_setup_is_worded_as_such():
    lost = pika.exceptions.IncompatibleProtocolError(
        "StreamLostError: (\"Stream connection lost: SSLEOFError(8, 'EOF occurred in violation of protocol "
        "(_ssl.c:2427)')\",)")
    text = _describe_connect(lost)
    assert text.startswith("TLS handshake failed: the server closed the connection while setting up TLS")
    assert "client certificate" in text


def test_a_missing_client_certificate_is_worded_as_such():
    # pika reports the server's alert only as text inside its own error
    lost = pika.exceptions.IncompatibleProtocolError(
        "StreamLostError: (\"Stream connection lost: SSLError(1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] "
        "tlsv13 alert certificate required (_ssl.c:2580)')\",)")
    assert _describe_connect(lost) == "TLS handshake failed: the server requires a client certificate " \
                                      "(options ssl_cert and ssl_key)"


# -- the ledger ----------------------------------------------------------------------------------


def test_mysql_tls_options_become_pymysql_arguments(pki):
    target = parse_url(mysql(ssl_ca=pki.ca, ssl_cert=pki.client_cert, ssl_key=pki.client_key))
    assert target.ssl == {"ssl_ca": str(pki.ca), "ssl_cert": str(pki.client_cert), "ssl_key": str(pki.client_key),
                          "ssl_verify_cert": True, "ssl_verify_identity": True}
    assert target.password == SECRET and target.database == "swarm"


def test_mysql_without_options_has_no_tls_arguments():
    assert parse_url("mysql://swarm:pw@db1/swarm").ssl == {}


def test_mysql_name_check_can_be_turned_off(pki):
    target = parse_url(mysql(ssl_ca=pki.ca, ssl_verify_identity="no"))
    assert target.ssl == {"ssl_ca": str(pki.ca), "ssl_verify_cert": True, "ssl_verify_identity": False}


@pytest.mark.parametrize("url, says", [
    (lambda pki: mysql(sslca=pki.ca, charset="latin1"), "unknown option charset, sslca"),
    (lambda pki: mysql(ssl_cert=pki.client_cert), "ssl_cert needs ssl_ca"),
    (lambda pki: mysql(ssl_verify_identity="true"), "ssl_verify_identity needs ssl_ca"),
    (lambda pki: mysql(ssl_ca="/no/such/ca.pem"), "option ssl_ca: cannot read /no/such/ca.pem"),
    (lambda pki: mysql(ssl_ca=pki.ca, ssl_cert=pki.client_cert, ssl_key="/no/such/k.pem"),
     "option ssl_key: cannot read /no/such/k.pem"),
    (lambda pki: mysql(ssl_ca=pki.ca, ssl_verify_identity="sometimes"), "must be true or false"),
], ids=["unknown", "cert without CA", "flag without CA", "no CA file", "no key file", "bad flag"])
def test_ledger_tls_mistakes_name_the_option_and_file(pki, url, says):
    assert says in config_error(parse_url, url(pki))


def connect_error(cause: BaseException) -> pymysql.err.OperationalError:
    """What PyMySQL raises when connecting fails with ``cause``."""
    exc = pymysql.err.OperationalError(2003, f"Can't connect to MySQL server on 'db1' ({cause})")
    exc.original_exception = cause
    return exc


def test_a_certificate_the_ledger_refuses_is_not_retried():
    refused = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    refused.verify_message = "self-signed certificate in certificate chain"
    exc = connect_error(refused)
    assert not transient(exc)
    assert describe(exc).startswith("TLS verification failed: the server's certificate was refused: "
                                    "self-signed certificate in certificate chain")


def test_a_server_that_cannot_be_reached_is_still_retried():
    exc = connect_error(ConnectionRefusedError(111, "Connection refused"))
    assert transient(exc) and describe(exc).startswith("error 2003: Can't connect")
