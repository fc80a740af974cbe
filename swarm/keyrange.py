"""Splitting a key range into chunks: region boundaries first, then uniform cuts."""
from __future__ import annotations

import bisect
from typing import Sequence

from swarm.table import prefix_stop

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


BYTES = bytes(range(256))  # any byte: keys as big-endian numbers, as HBase's UniformSplit sees them


class KeySpace:
    """Keys ``prefix + <digits of alphabet>`` as numbers from 0 to ``end``, to cut a key range evenly.

    ``position`` is monotone: a key sorting before another never has a
    larger position. A key whose digits are not all in ``alphabet`` (a
    separator, say) sits where it sorts among those that are; a key before
    ``prefix`` is at 0 and a key after every key with ``prefix`` at ``end``.
    ``key_at(p)`` is the shortest key of alphabet digits at position ``p``.
    """

    def __init__(self, prefix: bytes = b"", alphabet: bytes = HEX, width: int | None = None):
        digits = bytes(sorted(set(alphabet)))
        if len(digits) < 2:
            raise ValueError("the alphabet needs two digits or more")
        self.prefix, self.alphabet, self.base = bytes(prefix), digits, len(digits)
        # By default about 2**32 positions: enough to cut any region of any table.
        self.width = width or max(4, -(-32 // (self.base.bit_length() - 1)))
        self.end: int = self.base**self.width

    def position(self, key: bytes, stop: bool = False) -> int:
        """Where ``key`` sits; with ``stop``, ``b""`` is the open end of a range, at ``end``."""
        if stop and not key:
            return self.end
        if not key.startswith(self.prefix):
            return 0 if key < self.prefix else self.end
        rest, value = key[len(self.prefix):], 0
        for i in range(self.width):
            if i >= len(rest):
                value *= self.base  # a shorter key sorts first: its missing digits count as the lowest
                continue
            digit = bisect.bisect_left(self.alphabet, rest[i])
            value = value * self.base + digit
            if digit == self.base or self.alphabet[digit] != rest[i]:
                # Not a digit: it sorts after every key with a lower digit here, before every one with this one.
                scale: int = self.base ** (self.width - i - 1)
                return value * scale
        return value

    def key_at(self, position: int) -> bytes:
        """The shortest key at ``position`` (0 < position < end): ``prefix``, digits, no trailing lowest ones."""
        if not 0 < position < self.end:
            raise ValueError(f"position {position} is not inside the key space (0, {self.end})")
        digits = bytearray()
        for _ in range(self.width):
            position, d = divmod(position, self.base)
            digits.append(self.alphabet[d])
        return self.prefix + bytes(reversed(digits)).rstrip(self.alphabet[:1])

    def cuts(self, start: bytes, stop: bytes, parts: int) -> list[bytes]:
        """Up to ``parts - 1`` keys cutting ``[start, stop)`` (``stop`` ``b""``: open) into parts of equal width."""
        low, high = self.position(start), self.position(stop, stop=True)
        points = sorted({low + (high - low) * i // parts for i in range(1, parts)} - {low, high})
        keys = [self.key_at(p) for p in points if low < p < high]
        return [k for k in keys if start < k and (not stop or k < stop)]


def region_ranges(
    regions: Sequence[tuple[bytes, bytes]],
    start: bytes = b"",
    stop: bytes = b"",
    *,
    prefix: bytes | None = None,
    per_region: int | None = None,
    chunks: int | None = None,
    alphabet: bytes = HEX,
) -> list[tuple[bytes, bytes]]:
    """The keys with ``prefix`` (or ``[start, stop)``, ``b""`` open) cut at the region boundaries, then evenly.

    ``per_region=k``: each region's part of the range in ``k`` ranges.
    ``chunks=n``: ``n`` ranges in all, shared among the regions' parts by
    their width, each part at least one (so more than ``n`` when the range
    crosses more regions than that). Neither: one range per region's part.
    Widths and cuts assume the key bytes after ``prefix`` (or after the
    common prefix of ``start`` and ``stop``) are spread evenly over
    ``alphabet``: hex digits by default, as hashed or salted keys are;
    ``BYTES`` for binary keys. A part too narrow to cut stays whole.
    """
    if prefix is not None:
        if start or stop:
            raise ValueError("give prefix, or start and stop, not both")
        start, stop = prefix, prefix_stop(prefix)
    if per_region is not None and chunks is not None:
        raise ValueError("give per_region or chunks, not both")
    if (per_region is not None and per_region < 1) or (chunks is not None and chunks < 1):
        raise ValueError("per_region and chunks must be >= 1")
    if stop and stop <= start:
        raise ValueError(f"an empty key range: start {start!r} is not before stop {stop!r}")
    space = KeySpace(common_prefix(start, stop) if prefix is None else prefix, alphabet)
    pieces = plan_ranges(regions, start, stop)
    if chunks is not None:
        parts = _shares(chunks, [space.position(b, stop=True) - space.position(a) for a, b in pieces])
    else:
        parts = [per_region or 1] * len(pieces)
    out: list[tuple[bytes, bytes]] = []
    for (low, high), n in zip(pieces, parts, strict=True):
        points = [low, *space.cuts(low, high, n), high]
        out.extend(zip(points[:-1], points[1:], strict=True))
    return out


def common_prefix(start: bytes, stop: bytes) -> bytes:
    """The bytes every key of ``[start, stop)`` begins with (none when ``stop`` is open)."""
    if not stop:
        return b""
    n = 0
    while n < min(len(start), len(stop)) and start[n] == stop[n]:
        n += 1
    return start[:n]


def _shares(total: int, widths: list[int]) -> list[int]:
    """``total`` split in proportion to ``widths`` (largest remainders), at least 1 each."""
    whole = sum(widths)
    if whole <= 0:
        return [1] * len(widths)
    quotas = [total * w / whole for w in widths]
    shares = [max(1, int(q)) for q in quotas]
    by_remainder = sorted(range(len(widths)), key=lambda i: (-(quotas[i] - int(quotas[i])), i))
    for i in by_remainder[: max(0, total - sum(shares))]:
        shares[i] += 1
    return shares


def range_cuts(start: bytes, stop: bytes, parts: int, alphabet: bytes = HEX) -> list[bytes]:
    """Up to ``parts - 1`` keys cutting ``[start, stop)`` (``stop`` ``b""``: open) into parts of even width.

    For splitting a range that is already planned, with nothing known of it
    but its ends: the digits weighed are those after the prefix both ends
    share, and a ``stop`` that ends the keys of a prefix (``prefix_stop(p)``,
    as a day's last chunk does) weighs those after ``p``. Fewer keys (none)
    when the range is too narrow to cut.
    """
    if parts < 2 or (stop and stop <= start):
        return []
    return KeySpace(range_prefix(start, stop), alphabet).cuts(start, stop, parts)


def range_prefix(start: bytes, stop: bytes) -> bytes:
    """The prefix every key of ``[start, stop)`` shares; a ``stop`` that is ``prefix_stop(p)`` counts as ``p``'s end."""
    if stop:
        head = start[:len(stop)]
        if len(head) == len(stop) and prefix_stop(head) == stop:
            return head
    return common_prefix(start, stop)
