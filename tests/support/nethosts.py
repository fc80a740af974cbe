"""Test hosts in Linux network namespaces, for the network faults a loopback proxy cannot make.

``FaultProxy`` fails the bytes between a client and a service; a fault suite also wants a
host whose link itself is slow, lossy or cut, for every connection its processes make,
with half-open connections and SYNs nobody answers. Here each host is a network namespace
joined to the root namespace by a veth pair on a /30 of the suite's own (from
``10.213.0.0/16``, clear of every address this machine has), and:

* the services listen on 127.0.0.1 of the root namespace, out of a namespace's reach, so each
  service port a host asks for gets a forwarder (a ``FaultProxy``) bound to the root-side
  veth address: ``host.service(5672)`` is the ``(address, port)`` its processes use;
* ``host.popen`` and ``host.run`` start processes inside it (``ip netns exec``);
* ``host.delay`` puts ``tc netem`` on both veth ends (netem shapes egress only), and
  ``host.partition`` drops packets with nftables inside the namespace, both ways or one.

Nothing outside the suite's own namespaces and veths is touched. ``close`` (or the
``nethosts`` fixture) kills the processes and deletes the namespaces, which takes their
veths, qdiscs and rules with them. Each ``NetHosts`` holds a lock file while it lives, so a
later one removes what a killed run left (its lock is free) and leaves a live run's alone.

Needs root (CAP_NET_ADMIN), ``ip``, ``tc`` and ``nft``: ``unavailable_reason()`` says what
is missing. Without netem in the kernel (``netem_reason()``), ``delay`` falls back to the
forwarders' own delay (service traffic only) and ``loss_pct`` to an nftables random drop;
jitter and reordering then raise ``Unsupported``.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from functools import cache
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import pytest

from tests.support.faultproxy import FaultProxy
from tests.support.net import HOST

PREFIX = "swarm-t"  # namespaces: swarm-t<token>-<host name>
LINK_PREFIX = "swt"  # veths: swt<token><index>r (root end) and ...h (host end); 15 characters at most
POOL = IPv4Network("10.213.0.0/16")
LOCKS = Path("/run/swarm-nethosts")
DIRECTIONS = ("both", "out", "in")
PARTITION, LOSS = "swarm_partition", "swarm_loss"  # nftables tables, inside a host's namespace
_TOKEN = re.compile(r"[0-9a-f]{6}")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,30}")


class Unsupported(RuntimeError):
    """A fault this kernel cannot make."""


def _cmd(argv: list[str], netns: str | None = None, check: bool = True, stdin: str | None = None) -> str:
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done.stdout


# availability -------------------------------------------------------------------------------

def unavailable_reason() -> str | None:
    """Why test hosts cannot be made here, or None when they can (makes and deletes a namespace and a veth)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (Debian: iproute2, nftables)"
    return _probe(netem=False)


@cache
def netem_reason() -> str | None:
    """Why ``tc netem`` does not work here, or None when it does."""
    return _probe(netem=True)


def _probe(netem: bool) -> str | None:
    netns, link = f"{PREFIX}probe{secrets.token_hex(3)}", f"{LINK_PREFIX}probe{secrets.token_hex(2)}"
    try:
        _cmd(["ip", "netns", "add", netns])
        _cmd(["ip", "link", "add", link, "type", "veth", "peer", "name", link + "h", "netns", netns])
        if netem:
            _cmd(["tc", "qdisc", "add", "dev", link, "root", "netem", "delay", "1ms"])
        return None
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"{'tc netem' if netem else 'network namespaces'} unavailable: {exc}"
    finally:
        _cmd(["ip", "link", "del", link], check=False)
        _cmd(["ip", "netns", "del", netns], check=False)


# addresses ----------------------------------------------------------------------------------

def used_networks(ip_addr_output: str) -> list[IPv4Network]:
    """The networks of the addresses in ``ip -4 -o addr`` output."""
    found = re.findall(r"\binet (\d+\.\d+\.\d+\.\d+/\d+)", ip_addr_output)
    return [ipaddress.IPv4Interface(text).network for text in found]


def allocate(used: Iterable[IPv4Network], pool: IPv4Network = POOL, start: int = 0) -> IPv4Network:
    """The first /30 of ``pool`` from the ``start``-th on (wrapping round) that overlaps none of ``used``."""
    used = list(used)
    subnets = list(pool.subnets(new_prefix=30))
    for i in range(len(subnets)):
        net = subnets[(start + i) % len(subnets)]
        if not any(net.overlaps(other) for other in used):
            return net
    raise RuntimeError(f"no free /30 left in {pool}")


# locks: a run's lock is held while it lives ---------------------------------------------------

def _lock(token: str) -> IO[str]:
    LOCKS.mkdir(parents=True, exist_ok=True)
    handle = open(LOCKS / f"{token}.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def _alive(token: str) -> bool:
    try:
        with open(LOCKS / f"{token}.lock") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def _kill_namespace(netns: str) -> None:
    """Kill whatever still runs in ``netns``, then delete it (its veth pair goes with it)."""
    for pid in _cmd(["ip", "netns", "pids", netns], check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    _cmd(["ip", "netns", "del", netns], check=False)


def clean_stale() -> list[str]:
    """Remove the namespaces, veths and locks that runs no longer alive left; returns what was removed."""
    removed = []
    for line in _cmd(["ip", "netns", "list"]).splitlines():
        netns = line.split()[0] if line.strip() else ""
        token = netns[len(PREFIX):len(PREFIX) + 6]
        if netns.startswith(PREFIX) and _TOKEN.fullmatch(token) and not _alive(token):
            _kill_namespace(netns)
            removed.append(netns)
    for link in re.findall(rf"^\d+: ({LINK_PREFIX}[0-9a-f]{{6}}\d+[rh])[@:]", _cmd(["ip", "-o", "link"]), re.M):
        if not _alive(link[len(LINK_PREFIX):len(LINK_PREFIX) + 6]):
            _cmd(["ip", "link", "del", link], check=False)
            removed.append(link)
    for lock in LOCKS.glob("*.lock") if LOCKS.is_dir() else ():
        if not _alive(lock.stem):
            lock.unlink(missing_ok=True)
    return removed


# hosts ----------------------------------------------------------------------------------------

class Host:
    """One test host: a namespace ``netns``, its address ``address``, the root side's ``gateway``."""

    DROPPED = "packets dropped"  # what ``dropped`` counts
    ONE_WAY = True  # can ``partition`` drop one direction only

    def __init__(self, name: str, netns: str, link: str, net: IPv4Network):
        self.name, self.netns = name, netns
        self.link, self.peer = link + "r", link + "h"  # root end, host end
        gateway, address = list(net.hosts())
        self.gateway, self.address = str(gateway), str(address)
        self.forwarders: dict[int, FaultProxy] = {}  # service port -> its forwarder on the gateway
        self._procs: list[subprocess.Popen[Any]] = []
        self.command = ["ip", "netns", "exec", netns]  # runs what follows on this host (it execs: same pid)

    def _up(self, net: IPv4Network) -> None:
        _cmd(["ip", "netns", "add", self.netns])
        _cmd(["ip", "link", "add", self.link, "type", "veth", "peer", "name", self.peer, "netns", self.netns])
        _cmd(["ip", "addr", "add", f"{self.gateway}/{net.prefixlen}", "dev", self.link])
        _cmd(["ip", "link", "set", self.link, "up"])
        for argv in (["ip", "addr", "add", f"{self.address}/{net.prefixlen}", "dev", self.peer],
                     ["ip", "link", "set", self.peer, "up"], ["ip", "link", "set", "lo", "up"]):
            _cmd(argv, self.netns)

    def forward(self, port: int) -> tuple[str, int]:
        """Forward ``127.0.0.1:port`` of the root namespace to the gateway; where the host reaches it."""
        if port not in self.forwarders:
            self.forwarders[port] = FaultProxy((HOST, port), name=f"{self.netns}-{port}", bind=self.gateway)
        return self.service(port)

    def service(self, port: int) -> tuple[str, int]:
        """The address a process on this host uses for the service on root's ``127.0.0.1:port``."""
        return self.gateway, self.forwarders[port].port

    # processes ----------------------------------------------------------------------------

    def popen(self, argv: list[str], env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` on this host, in a session of its own; killed at teardown."""
        proc = subprocess.Popen([*self.command, *argv], env=env, start_new_session=True, **kw)
        self._procs.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 60, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run a short command on this host; its output as text."""
        return subprocess.run([*self.command, *argv], capture_output=True, text=True,
                              timeout=timeout, check=check, **kw)

    def python(self, code: str, *args: str, timeout: float = 60) -> str:
        """Run ``code`` with this interpreter on this host; its standard output."""
        return self.run([sys.executable, "-c", code, *args], timeout=timeout).stdout

    # faults -------------------------------------------------------------------------------

    def delay(self, ms: float, jitter_ms: float = 0, loss_pct: float = 0, reorder_pct: float = 0) -> None:
        """Delay each direction of the link by ``ms`` (and the rest, as netem has them); replaces the last."""
        self.clear()
        if netem_reason() is None:
            netem = ["delay", f"{ms}ms", f"{jitter_ms}ms", "loss", f"{loss_pct}%", "reorder", f"{reorder_pct}%"]
            _cmd(["tc", "qdisc", "replace", "dev", self.link, "root", "netem", *netem])  # root -> host
            _cmd(["tc", "qdisc", "replace", "dev", self.peer, "root", "netem", *netem], self.netns)  # host -> root
            return
        if jitter_ms or reorder_pct:
            raise Unsupported(f"jitter and reordering need netem: {netem_reason()}")
        for proxy in self.forwarders.values():
            proxy.delay(ms)
        if loss_pct:
            drop = f"numgen random mod 100 < {loss_pct:g} drop"
            self._nft(LOSS, [("out", f"oifname {self.peer} {drop}"), ("in", f"iifname {self.peer} {drop}")])

    def clear(self) -> None:
        """Undo ``delay``."""
        _cmd(["tc", "qdisc", "del", "dev", self.link, "root"], check=False)  # fails when there is none
        _cmd(["tc", "qdisc", "del", "dev", self.peer, "root"], self.netns, check=False)
        for proxy in self.forwarders.values():
            proxy.passing()
        _cmd(["nft", "delete", "table", "inet", LOSS], self.netns, check=False)

    def partition(self, port: int | None = None, direction: str = "both") -> None:
        """Drop packets between this host and the gateway: ``out`` of the host, ``in`` to it, or ``both``.

        ``port``: only those to or from that port of the gateway (a forwarded service's port
        is mapped to its forwarder's). Adds to earlier partitions until ``heal``.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"direction: one of {', '.join(DIRECTIONS)}")
        port = self.forwarders[port].port if port in self.forwarders else port
        rules = []
        if direction in ("both", "out"):
            rules.append(("out", f"ip daddr {self.gateway}" + (f" tcp dport {port}" if port else "") + " counter drop"))
        if direction in ("both", "in"):
            rules.append(("in", f"ip saddr {self.gateway}" + (f" tcp sport {port}" if port else "") + " counter drop"))
        self._nft(PARTITION, rules)

    def heal(self) -> None:
        """Undo every ``partition``."""
        _cmd(["nft", "delete", "table", "inet", PARTITION], self.netns, check=False)

    def dropped(self) -> dict[str, int]:
        """Packets the partition has dropped so far, per direction (``out``, ``in``)."""
        counts = {"out": 0, "in": 0}
        text = _cmd(["nft", "-j", "list", "table", "inet", PARTITION], self.netns, check=False)
        for item in json.loads(text)["nftables"] if text else ():
            rule = item.get("rule")
            for expr in rule["expr"] if rule else ():
                if "counter" in expr:
                    counts[rule["chain"]] += expr["counter"]["packets"]
        return counts

    def _nft(self, table: str, rules: list[tuple[str, str]]) -> None:
        script = [f"add table inet {table}",
                  f"add chain inet {table} out {{ type filter hook output priority 0; policy accept; }}",
                  f"add chain inet {table} in {{ type filter hook input priority 0; policy accept; }}"]
        script += [f"add rule inet {table} {chain} {rule}" for chain, rule in rules]
        _cmd(["nft", "-f", "-"], self.netns, stdin="\n".join(script) + "\n")

    # teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        for proc in self._procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: children too
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        _kill_namespace(self.netns)  # anything else started in it
        _cmd(["ip", "link", "del", self.link], check=False)  # gone with the namespace, unless never moved
        errors = []
        for proxy in self.forwarders.values():
            try:
                proxy.close()
            except RuntimeError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


class NetHosts:
    """Test hosts made with ``add``; ``close`` removes them all."""

    kind = "network namespaces"

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise Unsupported(reason)
        clean_stale()
        self.token = secrets.token_hex(3)
        self._lock = _lock(self.token)
        self.hosts: dict[str, Host] = {}

    def add(self, name: str, ports: Iterable[int] = ()) -> Host:
        """A new host ``name``, with forwarders to the services on root's ``127.0.0.1`` ``ports``."""
        if not _NAME.fullmatch(name) or name in self.hosts:
            raise ValueError(f"host name {name!r}: new, lowercase letters, digits and '-'")
        netns = f"{PREFIX}{self.token}-{name}"
        # one allocation at a time on this machine: two runs must not both take the free /30 they see
        with open(LOCKS / "allocate.lock", "w") as alloc:
            fcntl.flock(alloc, fcntl.LOCK_EX)
            net = allocate(used_networks(_cmd(["ip", "-4", "-o", "addr"])), start=secrets.randbelow(16384))
            host = self.hosts[name] = Host(name, netns, f"{LINK_PREFIX}{self.token}{len(self.hosts)}", net)
            host._up(net)
        for port in ports:
            host.forward(port)
        return host

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def close(self) -> None:
        errors = []
        for host in self.hosts.values():
            try:
                host.close()
            except Exception as exc:  # noqa: BLE001 - the other hosts are removed all the same
                errors.append(exc)
        self.hosts.clear()
        self._lock.close()
        (LOCKS / f"{self.token}.lock").unlink(missing_ok=True)
        if errors:
            raise errors[0]

    def __enter__(self) -> "NetHosts":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def nethosts() -> Iterator[NetHosts]:
    """A ``NetHosts`` removed after the test, whatever its outcome; skips where hosts cannot be made."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with NetHosts() as hosts:
        yield hosts
