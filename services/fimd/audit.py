"""fimd's side of the tamper-evident stream (contract: libs/auditstream, docs/logging.md).

`AuditStream` is owned by the LineWriter's thread, the one place lines leave fimd:

- it seals each line as it is written (`seal`), so a seq is given only to lines actually
  written: lines dropped before (full buffers) leave no gap and are reported by
  `output_dropped`; after a failed write the chain goes back to the last line completely
  written (`rollback`), so the lines lost in it leave no gap either;
- it counts the lines written and lost, and every `interval` seconds makes the heartbeat
  operational line with the counts since the previous one (`heartbeat`);
- it reads the key ring (`keys.json` of the Secret `fim-audit-key`) at start and again when
  the file changes (the kubelet swaps a mounted Secret's files in place), at most once a
  second: a new current generation is used from the next line on (`audit_key_rotated`).

Without a usable key fimd keeps monitoring and writes its lines unsealed: losing the file
events themselves would be worse for an audit than an unverifiable record. It says so loudly:
`audit_key_unavailable` (error) at start and on every failed reload, `"sealed":false` in each
heartbeat, the gauge `fimd_audit_sealed` 0 (alert `FimdAuditStreamUnsealed`), and the
verifier fails on every unsealed line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from libs.auditstream import keys
from libs.auditstream.seal import ChainState, Sealer
from services.fimd import lines

#: Called with (msg, level, fields) for an operational line to write.
Report = Callable[[str, str, dict[str, object]], None]
Clock = Callable[[], float]

HEARTBEAT = "heartbeat"
RELOAD_CHECK = 1.0  # seconds between looks at the key file


def _ignore(msg: str, level: str, fields: dict[str, object]) -> None:
    del msg, level, fields


@dataclass
class Counts:
    lines: int = 0  # lines written (events and operational lines, heartbeats excluded)
    events: int = 0  # of them from the event buffer (event, summary and drift lines)
    dropped: int = 0  # lines lost (buffers full or failed writes)


def _signature(path: str) -> tuple[int, int, int, int] | str:
    try:
        st = os.stat(path)
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror}"
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class KeyFile:
    """The node key from a key ring file, reloaded when the file changes."""

    def __init__(
        self,
        path: str,
        node: str,
        *,
        clock: Clock = time.monotonic,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self._on_error = on_error
        self._node = node
        self._report: Report = _ignore
        self._clock = clock
        self._signature: tuple[int, int, int, int] | str = ""
        self._checked = float("-inf")
        self.key: keys.NodeKey | None = None
        self.failures = 0

    def attach(self, report: Report) -> None:
        """Where operational lines go from now on (the writer, once it exists)."""
        self._report = report

    def _load(self) -> keys.NodeKey:
        try:
            with open(self.path, "rb") as f:
                data = f.read(keys.MAX_RING_BYTES + 1)
        except OSError as err:
            raise keys.KeyRingError(f"cannot read {self.path}: {err.strerror}") from None
        return keys.loads(data).node_key(self._node)

    def current(self) -> keys.NodeKey | None:
        """The key to seal with now (None: none usable); looks at the file at most once per
        RELOAD_CHECK seconds, and reads it only when it changed."""
        now = self._clock()
        if now - self._checked < RELOAD_CHECK:
            return self.key
        self._checked = now
        signature = _signature(self.path)
        if signature == self._signature:
            return self.key
        self._signature = signature
        try:
            key = self._load()
        except keys.KeyRingError as err:
            self.failures += 1
            if self._on_error is not None:
                self._on_error()
            sealing = f"still sealing with {self.key.kid}" if self.key else "lines are unsealed"
            self._report("audit_key_unavailable", "error", {"detail": f"{err}; {sealing}"})
            return self.key
        if self.key is None or key.kid != self.key.kid or key.key != self.key.key:
            previous = self.key.kid if self.key else None
            self.key = key
            msg = "audit_key_loaded" if previous is None else "audit_key_rotated"
            self._report(msg, "info", {"kid": key.kid, "previous": previous})
        return self.key


class AuditStream:
    """Sealing, heartbeats and their counts for one fimd boot. Not thread-safe: the writer
    thread owns it (`report` must only queue lines)."""

    def __init__(
        self,
        node: str,
        key_file: KeyFile | None,
        *,
        interval: float = 60.0,
        clock: Clock = time.monotonic,
        on_heartbeat: Callable[[float, bool], None] | None = None,
    ) -> None:
        self._node = node
        self._key_file = key_file
        self.interval = interval
        self._clock = clock
        self._on_heartbeat = on_heartbeat
        self.sealer = Sealer(key_file.key if key_file else None)
        self.counts = Counts()
        self._next = clock()  # the first heartbeat opens the boot

    def attach(self, report: Report) -> None:
        if self._key_file is not None:
            self._key_file.attach(report)

    @property
    def sealed(self) -> bool:
        return self.sealer.key is not None

    def refresh(self) -> None:
        if self._key_file is not None:
            self.sealer.key = self._key_file.current()

    def seal(self, data: bytes) -> tuple[bytes, list[tuple[int, ChainState]]]:
        return self.sealer.seal_block(data)

    def rollback(self, state: ChainState) -> None:
        self.sealer.state = state

    def written(self, line_count: int, event_count: int) -> None:
        self.counts.lines += line_count
        self.counts.events += event_count

    def dropped(self, count: int) -> None:
        self.counts.dropped += count

    def until_due(self) -> float:
        return max(0.0, self._next - self._clock())

    def due(self) -> bool:
        return self._clock() >= self._next

    def heartbeat(self) -> tuple[bytes, Counts]:
        """The heartbeat line (unsealed) and the counts it carries; `sent` restarts them."""
        counts = self.counts
        line = lines.op_line(
            self._node,
            HEARTBEAT,
            "info",
            interval=self.interval,
            lines=counts.lines,
            events=counts.events,
            ops=counts.lines - counts.events,
            dropped=counts.dropped,
            sealed=self.sealed,
        )
        return line.encode(), counts

    def sent(self, counts: Counts) -> None:
        """The heartbeat carrying `counts` was written: count afresh from here."""
        self.counts = Counts(
            self.counts.lines - counts.lines,
            self.counts.events - counts.events,
            self.counts.dropped - counts.dropped,
        )
        self._next = self._clock() + self.interval
        if self._on_heartbeat is not None:
            self._on_heartbeat(time.time(), self.sealed)

    def postpone(self) -> None:
        """The heartbeat could not be written: try again in a second."""
        self._next = self._clock() + min(1.0, self.interval)
