"""The real HBase the integration tests run on, through ``deploy/dev/hbase.sh``.

One HBase (HMaster with its region server and ZooKeeper, in one JVM) and its Thrift server serve
the whole session; ``deploy/dev/services.sh`` starts them before ``make test``, and the session
starts them itself if nothing answers. Each test sees HBase through a ``TestHBase``: a table
prefix of its own (``?table_prefix=...``), dropped with its tables afterwards. A test that
restarts or kills the Thrift server gets a Thrift server of its own (marker ``own_thrift``), and
one that stops HBase itself starts a private HBase (``HBase.private``), so that nothing a test
does is seen by other tests or other users of the shared HBase.
"""
from __future__ import annotations

import os
import queue
import socket
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import happybase

from swarm.effects import to_bytes
from swarm.tables.hbase import HBaseTables

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "dev" / "hbase.sh"
HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on (free once the probe closes)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def binary_key(key: bytes) -> str:
    """``key`` as DevAdmin reads it: HBase's shell-style binary string, every unsafe byte as \\xNN."""
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:"
    return "".join(chr(b) if b in safe else f"\\x{b:02X}" for b in key)


def from_binary(text: str) -> bytes:
    """DevAdmin's printed key (``Bytes.toStringBinary``) back to bytes."""
    out, i = bytearray(), 0
    while i < len(text):
        if text.startswith("\\x", i) and i + 4 <= len(text):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += text[i].encode()
            i += 1
    return bytes(out)


def answers(port: int, transport: str = "buffered", protocol: str = "binary", timeout_ms: int = 5000) -> bool:
    """Does a Thrift server on ``port`` answer a real call (``getTableNames``)?"""
    try:
        conn = happybase.Connection(HOST, port, timeout=timeout_ms, transport=transport, protocol=protocol)
    except Exception:  # noqa: BLE001 - refused, reset, timed out: all mean no
        return False
    try:
        conn.tables()
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        conn.close()


def wire(options: Sequence[str]) -> tuple[str, str]:
    """The (transport, protocol) a client needs for a Thrift server started with ``options``."""
    framed = any(o in ("-hsha", "-nonblocking", "-threadedselector", "-f", "--framed") for o in options)
    compact = any(o in ("-c", "--compact") for o in options)
    return ("framed" if framed else "buffered"), ("compact" if compact else "binary")


class HBase:
    """An HBase run by ``deploy/dev/hbase.sh`` with the settings in ``env``: the shared one, or a private one."""

    def __init__(self, env: dict[str, str] | None = None):
        self.env = dict(env or {})
        self.thrift_port = int(self.setting("HBASE_THRIFT_PORT", "9090"))
        # HBase's scanner lease (hbase.client.scanner.timeout.period), in seconds.
        self.scanner_timeout = int(self.setting("HBASE_SCANNER_TIMEOUT_MS", "5000")) / 1000
        self._thrift: dict[int, ThriftServer] = {}
        self._lock = threading.Lock()
        self._drops: queue.Queue[str] = queue.Queue()
        self._dropper: threading.Thread | None = None

    def setting(self, name: str, default: str) -> str:
        return self.env.get(name) or os.environ.get(name) or default

    @classmethod
    def private(cls, folder: Path, **env: str) -> "HBase":
        """An HBase of its own in ``folder``, on ports of its own; ``start()`` it."""
        return cls({"HBASE_DEV_DATA": str(folder), "HBASE_ZK_PORT": str(free_port()),
                    "HBASE_THRIFT_PORT": str(free_port()), **env})

    def script(self, *args: str, timeout: float = 900) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"deploy/dev/hbase.sh {' '.join(args)} exited {done.returncode}:\n"
                               f"{done.stderr[-4000:]}{done.stdout[-2000:]}")
        return done.stdout

    # the whole HBase ---------------------------------------------------------------------

    def ensure(self) -> "HBase":
        """HBase and its Thrift server up: left as they are if Thrift answers, started if not."""
        if not answers(self.thrift_port):
            self.script("start")
        return self

    def start(self) -> None:
        self.script("start")

    def stop(self) -> None:
        """Every Thrift server of this HBase, then HBase itself (cleanly)."""
        self.script("stop")

    def stop_master(self, kill: bool = False) -> None:
        """HBase alone (master, region server, ZooKeeper); its Thrift servers stay up."""
        self.script("master-stop", *(["--kill"] if kill else []))

    def start_master(self) -> None:
        """HBase again; returns once it serves (through its Thrift servers, if any run)."""
        self.script("master-start")

    # Thrift servers ----------------------------------------------------------------------

    def thrift(self, port: int | None = None, options: Sequence[str] = ()) -> "ThriftServer":
        """A Thrift server of its own on ``port`` (a free one if None); ``start()`` it."""
        server = ThriftServer(self, port or free_port(), options)
        self._thrift[server.port] = server
        return server

    # admin -------------------------------------------------------------------------------

    def admin(self, *args: str) -> str:
        return self.script("admin", *args)

    def presplit(self, table: str, families: Iterable[str], splits: Iterable[bytes]) -> None:
        """Create ``table`` (its full HBase name) split at ``splits``, as an operator does in the HBase shell."""
        cuts = ",".join(binary_key(s) for s in sorted({to_bytes(s) for s in splits if s}))
        self.admin("create-presplit", table, *[f.rstrip(":") for f in families], "--splits", cuts)

    def split(self, table: str, row: bytes) -> None:
        """Split the region of ``table`` holding ``row`` at ``row``; returns once both halves are online."""
        self.admin("split", table, binary_key(row))

    def regions(self, table: str) -> list[tuple[bytes, bytes]]:
        out = self.admin("regions", table)
        return [(from_binary(start), from_binary(end))
                for start, end, _ in (line.split("\t") for line in out.splitlines() if line)]

    def drop_prefix(self, prefix: str) -> None:
        """Disable and delete every table whose name starts with ``prefix``, through Thrift."""
        conn = happybase.Connection(HOST, self.thrift_port, timeout=120_000)
        try:
            for name in conn.tables():
                if name.startswith(prefix.encode()):
                    try:
                        conn.delete_table(name, disable=conn.is_table_enabled(name))
                    except Exception:  # noqa: BLE001 - best effort: another cleanup may have won
                        pass
        finally:
            conn.close()

    def drop_later(self, prefix: str) -> None:
        """``drop_prefix`` in a background thread (a test's tables are its own: nobody waits for them)."""
        with self._lock:
            if self._dropper is None:
                self._dropper = threading.Thread(target=self._drop_queued, name="hbase-drop", daemon=True)
                self._dropper.start()
        self._drops.put(prefix)

    def _drop_queued(self) -> None:
        while True:
            prefix = self._drops.get()
            try:
                self.drop_prefix(prefix)
            except Exception:  # noqa: BLE001 - best effort, like every cleanup
                pass
            finally:
                self._drops.task_done()

    def drain(self) -> None:
        """Wait until every ``drop_later`` is done."""
        self._drops.join()


class ThriftServer:
    """An HBase Thrift(1) server process of its own (``deploy/dev/hbase.sh thrift-start``)."""

    def __init__(self, hbase: HBase, port: int, options: Sequence[str] = ()):
        self.hbase, self.host, self.port, self.options = hbase, HOST, port, tuple(options)
        self.transport, self.protocol = wire(self.options)

    @property
    def url(self) -> str:
        query = ""
        if (self.transport, self.protocol) != ("buffered", "binary"):
            query = f"?transport={self.transport}&protocol={self.protocol}"
        return f"hbase://{self.host}:{self.port}{query}"

    def start(self) -> int:
        """Start it and return once it answers; returns its port, as ``DevServer.start`` does."""
        self.hbase.script("thrift-start", "--port", str(self.port), *self.options)
        return self.port

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        self.hbase.script("thrift-stop", "--port", str(self.port))

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        self.hbase.script("thrift-stop", "--port", str(self.port), "--kill")

    @property
    def running(self) -> bool:
        return answers(self.port, self.transport, self.protocol)

    def __enter__(self) -> "ThriftServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class TestHBase:
    """What a test sees of HBase: a table prefix of its own, on the shared Thrift server or its own.

    ``url`` is the Swarm tables URL (``hbase://127.0.0.1:PORT?table_prefix=...``). With a Thrift
    server of its own, ``stop()``/``start()``/``kill()`` act on it, as on the dev server.
    """

    __test__ = False  # not a test class

    def __init__(self, hbase: HBase, own_thrift: bool = False, options: Sequence[str] = (),
                 thrift: ThriftServer | None = None):
        """``thrift``: a Thrift server of its own that the caller shares between tests (left running)."""
        self.hbase = hbase
        self.prefix = f"it{uuid.uuid4().hex[:10]}"
        self._shared = thrift is not None
        if thrift is None and (own_thrift or options):
            thrift = hbase.thrift(options=options)
            thrift.start()
        self.thrift = thrift
        self.host = HOST
        self.port = thrift.port if thrift else hbase.thrift_port
        self.transport, self.protocol = (thrift.transport, thrift.protocol) if thrift else wire(options)

    @property
    def url(self) -> str:
        query = f"table_prefix={self.prefix}"
        if (self.transport, self.protocol) != ("buffered", "binary"):
            query += f"&transport={self.transport}&protocol={self.protocol}"
        return f"hbase://{self.host}:{self.port}?{query}"

    def with_options(self, **options: object) -> str:
        """``url`` with more URL options (retries, backoff, ...)."""
        return self.url + "".join(f"&{k}={v}" for k, v in options.items())

    def full(self, name: str) -> str:
        """The HBase name of Swarm table ``name``."""
        return f"{self.prefix}_{name}"

    def open_tables(self, **options: object) -> "PresplitTables":
        """The tables, with ``create_table(splits=...)`` pre-splitting as an operator would."""
        return PresplitTables(self.with_options(**options), self)

    def presplit(self, name: str, families: Iterable[str], splits: Iterable[bytes]) -> None:
        self.hbase.presplit(self.full(name), families, splits)

    def split(self, name: str, row: bytes) -> None:
        self.hbase.split(self.full(name), row)

    def happybase(self, **kwargs) -> happybase.Connection:
        """A plain happybase connection that sees only this test's tables (happybase's table_prefix)."""
        return happybase.Connection(self.host, self.port, table_prefix=self.prefix, transport=self.transport,
                                    protocol=self.protocol, **kwargs)

    # the Thrift server of its own --------------------------------------------------------

    def _own(self) -> ThriftServer:
        if self.thrift is None:
            raise RuntimeError("this test shares the Thrift server: mark it @pytest.mark.own_thrift to restart one")
        return self.thrift

    def start(self) -> int:
        return self._own().start()

    def stop(self) -> None:
        self._own().stop()

    def kill(self) -> None:
        self._own().kill()

    def close(self) -> None:
        """Stop the Thrift server of its own (a shared one: leave it running) and drop the test's tables."""
        try:
            if self.thrift is not None and not self._shared:
                self.thrift.stop()
            elif self.thrift is not None:
                self.thrift.start()  # left stopped by a failed test: running again for the next
        finally:
            self.hbase.drop_later(self.prefix + "_")


class PresplitTables(HBaseTables):
    """``HBaseTables`` whose ``create_table(splits=...)`` pre-splits through DevAdmin first.

    HBase's Thrift1 API cannot pre-split, so on HBase an operator creates such tables in the HBase
    shell before the first run; this does the same for tests, then lets the adapter find the table.
    """

    def __init__(self, url: str, where: TestHBase):
        super().__init__(url)
        self._where = where

    def create_table(self, name: str, families: Iterable[str], splits: Iterable[bytes] = ()) -> None:
        families = list(families)
        cuts = sorted({to_bytes(s) for s in splits if s})
        if cuts and name not in self.tables():
            self._where.presplit(name, families, cuts)
        super().create_table(name, families, splits)
