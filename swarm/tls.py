"""TLS for the backends: the files a URL names, checked when it is parsed, and failures worded for operators.

The broker and the ledger share the query options ``ssl_ca``, ``ssl_cert``,
``ssl_key`` and ``ssl_verify_identity``. A bad file is a ``ConfigError``
naming the option and the file when the URL is parsed, not a puzzling
failure at connect time.
"""
from __future__ import annotations

import ssl
from typing import Mapping

from swarm.errors import ConfigError

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(owner: str, name: str, text: str | None, default: bool) -> bool:
    """A true/false URL option; ``ConfigError`` naming it for anything else."""
    if text is None:
        return default
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{owner}: option {name}={text!r} must be true or false")


def client_context(owner: str, options: Mapping[str, str], check_hostname: bool) -> ssl.SSLContext:
    """A client context that verifies the server against ``ssl_ca`` (else the system's CAs).

    ``ssl_cert`` and ``ssl_key`` add a client certificate; the key may also sit in the
    certificate's file. ``owner`` ("broker", "ledger") starts every error message.
    """
    ca, cert, key = options.get("ssl_ca"), options.get("ssl_cert"), options.get("ssl_key")
    if key and not cert:
        raise ConfigError(f"{owner}: option ssl_key needs ssl_cert, the certificate of that key")
    try:
        context = ssl.create_default_context(cafile=_readable(owner, "ssl_ca", ca))
    except ssl.SSLError as exc:
        why = "" if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND" else f" ({_reason(exc)})"
        raise ConfigError(f"{owner}: option ssl_ca: {ca} holds no PEM certificate{why}") from None
    context.check_hostname = check_hostname  # the chain is verified either way (CERT_REQUIRED)
    if cert:
        _load_client_certificate(owner, context, cert, key)
    return context


def _load_client_certificate(owner: str, context: ssl.SSLContext, cert: str, key: str | None) -> None:
    _readable(owner, "ssl_cert", cert)
    _readable(owner, "ssl_key", key)
    shown = f"{cert} with key {key}" if key else cert

    def no_passphrase() -> str:
        # Without this OpenSSL would prompt on the terminal, which a worker under supervisord has not got.
        raise ConfigError(f"{owner}: option ssl_key: {key or cert} is encrypted; give an unencrypted key "
                          f"and protect it with file permissions")

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except ssl.SSLError as exc:
        raise ConfigError(f"{owner}: options ssl_cert/ssl_key: cannot use {shown}: {_reason(exc)}") from None


def _readable(owner: str, option: str, path: str | None) -> str | None:
    """``path``, once it is known to be a file this process can read."""
    if not path:
        return None
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"{owner}: option {option}: cannot read {path}: {exc.strerror or exc}") from None
    return path


def _reason(exc: ssl.SSLError) -> str:
    if exc.reason is None:
        return "not a PEM certificate and key"  # OpenSSL's "PEM lib"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return "the key does not belong to the certificate"
    return exc.reason


def failure(error: BaseException | None) -> str | None:
    """What went wrong when ``error`` (or an error it wraps) is a TLS failure; None for anything else.

    Meant for errors raised while connecting: later in a session an ``SSLError`` is a lost connection.
    """
    refused = verification_error(error)
    if refused is not None:
        return f"TLS verification failed: the server's certificate was refused: {refused.verify_message}"
    for cause in _chain(error):
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {_handshake_reason(str(cause))}"
    text = str(error or "")
    if any(mark in text for mark in ("SSLError", "SSLEOFError", "[SSL")):  # pika wraps some only as text
        return f"TLS handshake failed: {_handshake_reason(text)}"
    return None


def verification_error(error: BaseException | None) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure in ``error``'s chain, if any: retrying cannot cure it."""
    for cause in _chain(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
    return None


def _handshake_reason(text: str) -> str:
    if "CERTIFICATE_REQUIRED" in text or "certificate required" in text:
        return "the server requires a client certificate (options ssl_cert and ssl_key)"
    if "UNKNOWN_CA" in text or "BAD_CERTIFICATE" in text or "bad certificate" in text:
        return "the server refused the client certificate (options ssl_cert and ssl_key)"
    if "EOF occurred in violation of protocol" in text:
        # A server that refuses the client's certificate, or the lack of one, may close before its alert is read.
        return "the server closed the connection while setting up TLS; it may require a client certificate " \
               "(options ssl_cert and ssl_key) or refuse this one"
    return text


def _chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and what it wraps: causes, contexts and PyMySQL's ``original_exception``."""
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = getattr(error, "original_exception", None) or error.__cause__ or error.__context__
    return seen
