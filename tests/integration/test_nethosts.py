"""Test hosts in network namespaces (tests.support.nethosts): services reached, delay, partitions, teardown."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from tests.support.nethosts import LINK_PREFIX, LOCKS, PREFIX, NetHosts, _lock, nethosts, unavailable_reason
from tests.support.waiting import wait_until

pytestmark = pytest.mark.integration
RABBITMQ, MARIADB = 5672, 3306
AMQP_HEADER = b"AMQP\x00\x00\x09\x01"

# On a host: connect, send what argv[3] holds (if anything), print the first bytes back and the seconds it took.
EXCHANGE = """
import socket, sys, time
started = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4])) as sock:
        sock.sendall(bytes.fromhex(sys.argv[3]))
        print(sock.recv(64).hex(), time.monotonic() - started)
except OSError as exc:
    print(type(exc).__name__, time.monotonic() - started)
"""


def exchange(host, address: tuple[str, int], send: bytes = b"", timeout: float = 5) -> tuple[str, float]:
    """What a process on ``host`` got back from ``address`` (hex, or the error's name), and in how many seconds."""
    answer, took = host.python(EXCHANGE, address[0], str(address[1]), send.hex(), str(timeout)).split()
    return answer, float(took)


def echo_server(address: str) -> socket.socket:
    """A TCP echo server on ``address`` in the root namespace, in a thread; close the socket to stop it."""
    server = socket.create_server((address, 0))

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=echo, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return server


def names(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def test_a_host_reaches_rabbitmq_and_mariadb_through_its_forwarders(nethosts):
    host = nethosts.add("worker", ports=[RABBITMQ, MARIADB])
    assert exchange(host, ("127.0.0.1", RABBITMQ))[0] == "ConnectionRefusedError"  # the namespace's own loopback
    answer, _ = exchange(host, host.service(RABBITMQ), AMQP_HEADER)
    assert answer[:2] == "01", answer  # a method frame: connection.start
    greeting = bytes.fromhex(exchange(host, host.service(MARIADB))[0])
    assert greeting[4] == 10 and b"MariaDB" in greeting, greeting  # protocol 10, then the server's version
    assert host.service(RABBITMQ)[0] == host.gateway != "127.0.0.1"


def test_delay_slows_the_round_trip_and_clear_restores_it(nethosts):
    host = nethosts.add("slow", ports=[RABBITMQ])
    before = exchange(host, host.service(RABBITMQ), AMQP_HEADER)[1]
    host.delay(200)
    answer, delayed = exchange(host, host.service(RABBITMQ), AMQP_HEADER)
    assert answer[:2] == "01"
    assert delayed >= 0.35, (before, delayed)  # 200 ms each way at least once: 400 ms
    host.clear()
    after = exchange(host, host.service(RABBITMQ), AMQP_HEADER)[1]
    assert after < delayed - 0.2, (before, delayed, after)


# On a host: one connection to an echo server, driven line by line from stdin.
STALL = """
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
sock.sendall(b"a"); print(sock.recv(1).decode(), flush=True)
sys.stdin.readline()
sock.settimeout(2); sock.sendall(b"b")
try:
    print("answered" if sock.recv(1) else "closed", flush=True)
except TimeoutError:
    print("stalled", flush=True)
sys.stdin.readline()
sock.settimeout(30)
print("resumed" if sock.recv(1) == b"b" else "lost", flush=True)
"""


def test_partition_stalls_open_connections_and_new_ones_time_out_until_healed(nethosts):
    host = nethosts.add("cut", ports=[RABBITMQ])
    server = echo_server(host.gateway)
    port = server.getsockname()[1]
    conn = host.popen([sys.executable, "-c", STALL, host.gateway, str(port)],
                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert conn.stdout.readline().strip() == "a"
    host.partition()
    conn.stdin.write("\n")
    conn.stdin.flush()
    assert conn.stdout.readline().strip() == "stalled"
    assert exchange(host, (host.gateway, port), timeout=2)[0] == "TimeoutError"  # no RST: the SYN is lost
    assert exchange(host, host.service(RABBITMQ), AMQP_HEADER, timeout=2)[0] == "TimeoutError"
    assert host.dropped()["out"] > 0
    host.heal()
    conn.stdin.write("\n")
    conn.stdin.flush()
    assert conn.stdout.readline().strip() == "resumed"  # the held byte, retransmitted
    assert exchange(host, (host.gateway, port), b"c")[0] == b"c".hex()
    server.close()


def test_a_partition_on_one_port_leaves_the_others(nethosts):
    host = nethosts.add("port", ports=[RABBITMQ, MARIADB])
    host.partition(port=RABBITMQ)
    assert exchange(host, host.service(RABBITMQ), AMQP_HEADER, timeout=2)[0] == "TimeoutError"
    assert bytes.fromhex(exchange(host, host.service(MARIADB))[0])[4] == 10


# On a host: a UDP socket; print its port, send a datagram to argv[1]:argv[2], print what arrives in 3 s.
DATAGRAMS = """
import contextlib, socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 0)); sock.settimeout(3)
print(sock.getsockname()[1], flush=True)
with contextlib.suppress(PermissionError):  # a datagram dropped on its way out fails its sendto so
    sock.sendto(b"from host", (sys.argv[1], int(sys.argv[2])))
try:
    print(sock.recv(64).decode(), flush=True)
except TimeoutError:
    print("nothing", flush=True)
"""


@pytest.mark.parametrize("direction, host_hears, root_hears", [("out", True, False), ("in", False, True)])
def test_a_one_way_partition_passes_the_other_way(nethosts, direction, host_hears, root_hears):
    host = nethosts.add(f"half-{direction}")
    host.partition(direction=direction)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as root:
        root.bind((host.gateway, 0))
        root.settimeout(3)
        proc = host.popen([sys.executable, "-c", DATAGRAMS, host.gateway, str(root.getsockname()[1])],
                          stdout=subprocess.PIPE, text=True)
        root.sendto(b"from root", (host.address, int(proc.stdout.readline())))
        try:
            heard = root.recv(64) == b"from host"
        except TimeoutError:
            heard = False
        assert heard == root_hears
        assert (proc.stdout.readline().strip() == "from root") == host_hears
    assert (host.dropped()[direction] > 0, host.dropped()["out" if direction == "in" else "in"]) == (True, 0)


def test_teardown_leaves_no_namespace_veth_or_process_and_stale_ones_are_cleaned():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with NetHosts() as hosts:
        host = hosts.add("gone", ports=[RABBITMQ])
        proc = host.popen(["sleep", "600"])
        host.partition()
        host.delay(50)
        token = hosts.token
        assert host.netns in names(["ip", "netns", "list"]) and host.link in names(["ip", "-o", "link"])
    wait_until(lambda: proc.poll() is not None, "the host's process to be killed", timeout=10)
    assert PREFIX + token not in names(["ip", "netns", "list"])
    assert LINK_PREFIX + token not in names(["ip", "-o", "link"])
    # what a killed run leaves: a namespace and a veth of a token whose lock nobody holds
    stale, link = f"{PREFIX}{token}-stale", f"{LINK_PREFIX}{token}9"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    subprocess.run(["ip", "link", "add", link + "r", "type", "veth", "peer", "name", link + "h"], check=True)
    live = _lock("abcdef")  # a live run's namespace stays
    subprocess.run(["ip", "netns", "add", f"{PREFIX}abcdef-live"], check=True)
    try:
        NetHosts().close()
        assert stale not in names(["ip", "netns", "list"]) and link not in names(["ip", "-o", "link"])
        assert f"{PREFIX}abcdef-live" in names(["ip", "netns", "list"])
    finally:
        subprocess.run(["ip", "netns", "del", f"{PREFIX}abcdef-live"], check=False)
        live.close()
        (LOCKS / "abcdef.lock").unlink(missing_ok=True)
