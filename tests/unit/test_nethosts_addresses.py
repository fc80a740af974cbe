"""The test hosts' address allocation (tests.support.nethosts): a /30 clear of every address in use."""
from __future__ import annotations

from ipaddress import ip_network

import pytest

from tests.support.nethosts import allocate, used_networks

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
4: eth0    inet 10.213.0.9/24 brd 10.213.0.255 scope global eth0\\       valid_lft forever preferred_lft forever
9: swt0a1b2c0r    inet 10.213.1.1/30 scope global swt0a1b2c0r\\       valid_lft forever preferred_lft forever
"""


def test_used_networks_reads_ip_addr():
    assert used_networks(IP_ADDR) == [ip_network("127.0.0.0/8"), ip_network("10.213.0.0/24"),
                                      ip_network("10.213.1.0/30")]


def test_allocate_skips_what_overlaps_and_wraps_round():
    used = used_networks(IP_ADDR)
    assert allocate(used) == ip_network("10.213.1.4/30")  # past the /24 and the other run's /30
    assert allocate(used, start=16383) == ip_network("10.213.255.252/30")
    assert allocate([ip_network("10.213.255.252/30")], start=16383) == ip_network("10.213.0.0/30")


def test_allocate_fails_when_the_pool_is_full():
    with pytest.raises(RuntimeError, match="no free"):
        allocate([ip_network("10.0.0.0/8")], pool=ip_network("10.213.0.0/29"))
