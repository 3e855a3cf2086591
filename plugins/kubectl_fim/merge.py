"""Interleaving the lines of many fimd pods (one stream per pod) in time order. Pure.

Each stream's own order is kept exactly (a node's lines are a chain that `kubectl fim
verify` checks in order); between streams, the line with the earliest time key goes first.
While following, a stream may still deliver a line older than what another stream has
buffered, so a line is released only once it has waited `window` seconds (or when the
buffer is over its bounds, or at the end): a later line of another node can overtake it only
if it arrived more than `window` late. Time keys are RFC 3339 UTC strings of one format
(`normalise_time`), so they compare as text.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: Default bounds of what is held back: lines and bytes.
MAX_LINES = 10_000
MAX_BYTES = 64 << 20


def normalise_time(stamp: str) -> str:
    """An RFC 3339 UTC time (`...T13:04:05Z`, `.1Z`, `.123456Z`, `.123456789Z`) with exactly
    nine fraction digits, so that times compare as text; "" for anything else."""
    if len(stamp) < 20 or not stamp.endswith("Z") or stamp[10] != "T":
        return ""
    whole, dot, fraction = stamp[:-1].partition(".")
    if len(whole) != 19 or (dot and not fraction.isdigit()) or len(fraction) > 9:
        return ""
    return f"{whole}.{fraction:0<9}Z"


@dataclass
class _Held(Generic[T]):
    key: str
    arrived: float
    size: int
    item: T


@dataclass
class Merger(Generic[T]):
    """Holds lines of several streams back for `window` seconds and releases them in order."""

    window: float
    max_lines: int = MAX_LINES
    max_bytes: int = MAX_BYTES
    _streams: dict[str, collections.deque[_Held[T]]] = field(default_factory=dict)
    _last_key: dict[str, str] = field(default_factory=dict)
    _lines: int = 0
    _bytes: int = 0

    def add(self, stream: str, key: str, item: T, now: float, size: int = 0) -> None:
        """Holds `item` of `stream` (time key `key`, "" when it has none: then the stream's
        previous key, so it stays where it is), which arrived at `now` (monotonic seconds)."""
        key = key or self._last_key.get(stream, "")
        self._last_key[stream] = key
        self._streams.setdefault(stream, collections.deque()).append(_Held(key, now, size, item))
        self._lines += 1
        self._bytes += size

    def __len__(self) -> int:
        return self._lines

    def release(self, now: float, *, flush: bool = False) -> list[T]:
        """The items due at `now` in merged order (every item with `flush`)."""
        out: list[T] = []
        while True:
            stream = self._earliest()
            if stream is None:
                return out
            head = self._streams[stream][0]
            over = self._lines > self.max_lines or self._bytes > self.max_bytes
            if not (flush or over or now - head.arrived >= self.window):
                return out
            self._streams[stream].popleft()
            if not self._streams[stream]:
                del self._streams[stream]
            self._lines -= 1
            self._bytes -= head.size
            out.append(head.item)

    def _earliest(self) -> str | None:
        """The stream whose first held item has the smallest key (ties: the earliest
        arrival, then the stream name)."""
        best: tuple[str, float, str] | None = None
        for stream, held in self._streams.items():
            candidate = (held[0].key, held[0].arrived, stream)
            if best is None or candidate < best:
                best = candidate
        return None if best is None else best[2]
