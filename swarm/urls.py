"""Backend URLs: what is wrong with one, and how to show it, without showing its secrets.

Every adapter imports these from here, never from ``swarm.backends``, which
opens the adapters: the URL rules sit below both.
"""
from __future__ import annotations

import re
import urllib.parse

from swarm.errors import ConfigError

BROKER_SCHEMES = ("memory", "amqp", "amqps")
LEDGER_SCHEMES = ("sqlite", "mysql")
TABLE_SCHEMES = ("embedded", "hbase")
DEFAULT_PORTS = {"hbase": 9090}  # of the schemes whose URL may name several servers


# RFC 3986's userinfo: unreserved and sub-delimiter characters, ":" and percent-encoded octets.
_USERINFO = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2})*")
QUOTE_HINT = "urllib.parse.quote(password, safe='')"


def clean_credentials(url: str) -> bool:
    """Whether ``url``'s user and password can be told apart from the rest of it without doubt.

    They cannot when a password holds an unencoded ``@ / ? # %`` or space:
    ``amqp://u:p@ss/w%rd@host/vh`` parses as host ``ss`` and password ``p``,
    and any redaction would show the rest of the password. So besides a
    clean ``user:password``, an ``@`` may appear only once, before the host,
    and ``#`` not at all (a fragment means nothing to a backend). A URL with
    no host part (``sqlite:///path``) has no credentials: it is clean.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "@" not in url
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if not authority:
        return True
    userinfo, at, _ = authority.rpartition("@")
    after = rest[len(authority):]
    if "@" in after or "#" in after:
        return False
    return not at or bool(_USERINFO.fullmatch(userinfo))


def check_credentials(key: str, url: str, where: str = "", password_file: str | None = None) -> None:
    """``ConfigError`` naming ``key`` (set ``where``) when ``url``'s password is not percent-encoded.

    The message shows no part of the URL but its scheme: any other part may be a piece of the password.
    """
    if clean_credentials(url):
        return
    scheme = url.partition("://")[0] if "://" in url else "the"
    instead = f", or put the password in {password_file} and leave it out of the URL" if password_file else ""
    raise ConfigError(
        f"{key}{f', {where}' if where else ''}: cannot tell the user and password of this {scheme}:// URL from "
        f"its host: a password (or user) holding @ / ? # %, a space or another character outside letters, digits "
        f"and -._~!$&'()*+,;=: must be percent-encoded. Encode the password with {QUOTE_HINT} (for instance "
        f"python3 -c \"import getpass, urllib.parse; print(urllib.parse.quote(getpass.getpass(), safe=''))\") "
        f"and write the result in the URL{instead}; an @ or # anywhere else in the URL is written %40 or %23"
    )


_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+")


def split_servers(hosts: str, default_port: int) -> list[tuple[str, int]]:
    """``"h1:9090,h2"`` as ``[("h1", 9090), ("h2", default_port)]``: a URL's host part naming several servers.

    ``ValueError`` says which server is wrong, by its place and its host; never
    by the text of its port, which in ``amqp://user:pass`` is a password.
    An IPv6 address is written in brackets, and given without them.
    """
    servers: list[tuple[str, int]] = []
    for place, piece in enumerate(hosts.split(","), 1):
        host, colon, port = piece.partition(":") if not piece.startswith("[") else _bracketed(piece)
        if not piece:
            raise ValueError(f"server {place} is empty (write host:port, host:port)")
        if not _HOST.fullmatch(host):
            raise ValueError(f"server {place} has {'no host' if not host else 'a host that is not a name or address'}")
        number = int(port) if port.isascii() and port.isdigit() and len(port) <= 5 else -1
        if not colon:
            number = default_port
        if not 1 <= number <= 65535:
            raise ValueError(f"the port of server {place} ({host}) is not a number from 1 to 65535")
        server = (host.strip("[]"), number)
        if server in servers:
            raise ValueError(f"server {place} ({host}:{number}) is named twice")
        servers.append(server)
    return servers


def _bracketed(piece: str) -> tuple[str, str, str]:
    """``[::1]:9090`` as ``("[::1]", ":", "9090")``."""
    end = piece.find("]") + 1
    rest = piece[end:]
    if not end or rest[:1] not in ("", ":"):
        return piece, "", ""  # not a host: refused as such
    return piece[:end], rest[:1], rest[1:]


def _host_part(url: str) -> str:
    """The host (and port) part of ``url``'s authority: after any user, before the path."""
    rest = url.partition("://")[2]
    return re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]


def several_servers(url: str) -> bool:
    """Whether ``url`` names several servers, as ``hbase://h1:9090,h2:9090`` does."""
    return "," in _host_part(url)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``: the only form of a URL that is logged.

    A URL whose credentials cannot be told apart from the rest
    (``clean_credentials``) is shown as ``<unparseable URL>``: half of a
    password is no better hidden than all of it. One whose port is not a
    number is shown as its scheme and host: in ``amqp://user:pass``, the
    "port" is a password.
    """
    if not clean_credentials(url):
        return "<unparseable URL>"
    try:
        parts = urllib.parse.urlsplit(url)
        if several_servers(url):
            split_servers(_host_part(url), 1)  # raises ValueError for a port that is not a number
        else:
            _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return _servers_shown(url) if several_servers(url) else _scheme_and_host(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _servers_shown(url: str) -> str:
    """A URL naming several servers, each port that is not a number shown as ``***``."""
    scheme, _, rest = url.partition("://")
    hosts = _host_part(url)
    pieces = []
    for piece in hosts.split(","):
        host, colon, port = piece.rpartition(":") if not piece.endswith("]") else (piece, "", "")
        pieces.append(f"{host}:{port if port.isdigit() else '***'}" if colon else piece)
    return f"{scheme}://{','.join(pieces)}{rest[rest.index(hosts) + len(hosts):]}"


def server_name(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _scheme_and_host(url: str) -> str:
    try:
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or ''}"
    except ValueError:
        return "<unparseable URL>"


def with_password(url: str, password: str) -> str:
    """``url`` (which has a user and no password) with ``password``, percent-encoded, as its password."""
    parts = urllib.parse.urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{urllib.parse.quote(password, safe='')}@{host}"))


def without_password(url: str) -> str:
    """``url`` with no password at all (not even ``***``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo.split(':', 1)[0]}@{host}"))


def _scheme(url: str, key: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(f"{key}: expected a URL like {allowed[0]}://..., got {redact(str(url))!r}")
    scheme = url.split("://", 1)[0].lower()
    if scheme not in allowed:
        raise ConfigError(f"{key}: scheme {scheme!r} is not one of {', '.join(allowed)} (in {redact(url)})")
    return scheme


def file_path(url: str) -> str:
    """The path of ``sqlite:///path`` / ``embedded:///path``; ``:memory:`` for no path."""
    rest = url.split("://", 1)[1]
    if rest in ("", "/"):
        return ":memory:"
    if not rest.startswith("/"):
        raise ConfigError(f"{redact(url)}: a file URL needs three slashes, as in sqlite:///var/swarm.db")
    return rest[1:]  # sqlite:///rel/path is relative, sqlite:////abs/path absolute


def check_url(key: str, url: str) -> None:
    """Raise ``ConfigError`` naming ``key`` when ``url`` has the wrong scheme or a port that is not a number."""
    allowed = {"broker": BROKER_SCHEMES, "ledger": LEDGER_SCHEMES, "tables": TABLE_SCHEMES}[key.rsplit(".", 1)[-1]]
    _scheme(url, key, allowed)
    if several_servers(url):
        try:
            split_servers(_host_part(url), DEFAULT_PORTS.get(url.split("://", 1)[0].lower(), 1))
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}, in {redact(url)}") from None
        return
    try:
        _ = urllib.parse.urlsplit(url).port  # raises ValueError for a port that is not a number
    except ValueError:
        # Not the port itself: without a host, as in amqp://user:pass, it is a password.
        raise ConfigError(f"{key}: the port in {redact(url)}:... is not a number from 0 to 65535") from None


