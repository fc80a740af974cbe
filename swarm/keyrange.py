"""Splitting a key range into chunks: region boundaries first, then uniform cuts."""
from __future__ import annotations

from typing import Sequence

HEX = b"0123456789abcdef"


def uniform_splits(prefix: bytes, n: int, alphabet: bytes = HEX, width: int = 4) -> list[bytes]:
    """``n - 1`` cut points spreading keys ``prefix + <alphabet digits>`` evenly into ``n`` ranges.

    Like HBase's HexStringSplit: it assumes the digits after ``prefix`` are
    uniformly distributed (hashed or salted keys).
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    base = len(alphabet)
    space = base ** width
    n = min(n, space)
    cuts = []
    for i in range(1, n):
        value = i * space // n
        digits = bytearray()
        for _ in range(width):
            value, d = divmod(value, base)
            digits.append(alphabet[d])
        cuts.append(prefix + bytes(reversed(digits)))
    return cuts


def plan_ranges(
    regions: Sequence[tuple[bytes, bytes]], start: bytes, stop: bytes, cuts: Sequence[bytes] = ()
) -> list[tuple[bytes, bytes]]:
    """``[start, stop)`` cut at every region boundary and every cut point inside it."""
    points = {start}
    for edge in [r[0] for r in regions] + list(cuts):
        if edge and edge > start and (not stop or edge < stop):
            points.add(edge)
    ordered = sorted(points)
    return list(zip(ordered, ordered[1:] + [stop], strict=True))
