"""Does an HBase Thrift(1) server answer a real call? Python's standard library only, so that
deploy/dev/hbase.sh can ask before any virtual environment exists.

    python3 thrift_ping.py [--host H] [--port P] [--framed] [--compact] [--wait SECONDS] [--log FILE]

Sends ``getTableNames`` and expects a reply (not an exception). Exits 0 once the server
answers, 1 if it has not by the end of ``--wait`` (default: ask once), naming ``--log``.
"""
from __future__ import annotations

import argparse
import socket
import struct
import sys
import time


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def request(compact: bool, framed: bool) -> bytes:
    name = b"getTableNames"
    if compact:  # protocol id, version 1 | CALL << 5, seqid, name; then the empty args struct
        body = bytes([0x82, 0x21]) + _varint(1) + _varint(len(name)) + name + b"\x00"
    else:  # strict binary: version | CALL, name, seqid; then the empty args struct
        body = struct.pack(">iI", -2147418111, len(name)) + name + struct.pack(">i", 1) + b"\x00"
    return struct.pack(">I", len(body)) + body if framed else body


def answers(host: str, port: int, compact: bool = False, framed: bool = False, timeout: float = 10.0) -> bool:
    """True if the server sent a REPLY (not an EXCEPTION) to ``getTableNames``."""
    want = (4 if framed else 0) + (2 if compact else 4)
    head = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request(compact, framed))
            while len(head) < want:
                chunk = sock.recv(want - len(head))
                if not chunk:
                    return False
                head += chunk
    except OSError:
        return False
    head = head[4:] if framed else head
    if compact:  # protocol id, then version | type << 5
        return head[0] == 0x82 and head[1] >> 5 == 2
    return head == b"\x80\x01\x00\x02"  # strict binary: version 1, type REPLY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--framed", action="store_true")
    parser.add_argument("--compact", action="store_true")
    parser.add_argument("--wait", type=float, default=0.0, help="keep asking this many seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds one call may take")
    parser.add_argument("--log", default="", help="the server's log, named when it does not answer")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    while True:
        if answers(args.host, args.port, args.compact, args.framed, args.timeout):
            return 0
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    where = f"; see {args.log}" if args.log else ""
    if args.wait:
        print(f"HBase Thrift at {args.host}:{args.port} did not answer within {args.wait:.0f} s{where}",
              file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
