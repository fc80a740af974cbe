"""Loopback test hosts (tests/support/loophosts.py): the network suite's hosts where namespaces cannot be made."""
from __future__ import annotations

import socket

import pytest

from tests.support.loophosts import LoopHosts
from tests.support.nethosts import Unsupported
from tests.unit.test_fault_proxy import echo  # noqa: F401 - the fixture


def round_trip(address: tuple[str, int], timeout: float = 1.0) -> bytes | str:
    """What an echo through ``address`` sends back, or the error's name."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.sendall(b"ping")
            return sock.recv(16)
    except OSError as exc:
        return type(exc).__name__


@pytest.fixture
def hosts():
    made = LoopHosts()
    yield made
    made.close()


def test_a_partition_silences_the_hosts_service_until_healed(hosts, echo):
    a, b = hosts.add("a", ports=[echo.port]), hosts.add("b", ports=[echo.port])
    assert a.command == [] and a.service(echo.port) != b.service(echo.port)
    assert round_trip(a.service(echo.port)) == b"ping"
    a.partition(echo.port)
    assert round_trip(a.service(echo.port)) == "TimeoutError"  # taken, never answered
    assert round_trip(b.service(echo.port)) == b"ping"  # another host's link is its own
    a.heal()
    assert round_trip(a.service(echo.port)) == b"ping"


def test_a_partition_without_a_port_takes_every_service_and_delay_survives_it(hosts, echo):
    a = hosts.add("a", ports=[echo.port])
    a.delay(50)
    a.partition()
    assert round_trip(a.service(echo.port)) == "TimeoutError"
    a.heal()
    assert a.forwarders[echo.port].mode == "delay"
    assert round_trip(a.service(echo.port)) == b"ping"


def test_what_a_proxy_cannot_do_is_refused_by_name(hosts, echo):
    a = hosts.add("a", ports=[echo.port])
    with pytest.raises(Unsupported, match="one"):
        a.partition(echo.port, direction="in")
    with pytest.raises(Unsupported, match="lose"):
        a.delay(200, loss_pct=5)
    with pytest.raises(ValueError, match="direction"):
        a.partition(direction="sideways")
