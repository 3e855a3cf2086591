"""Waiting for fimd's event lines."""

from __future__ import annotations

import time
from typing import Any

from tests.e2e.system import FimSystem

# The design's promise: an event line in `kubectl logs` of the node's fimd within 2 s.
DEADLINE = 2.0
# Keep polling past the deadline so a late line is reported as late, not as missing.
GRACE = 15.0


def events(
    system: FimSystem,
    node: str,
    namespace: str,
    expected: list[tuple[str, str]],
    *,
    watcher: str = "",
    deadline: float = DEADLINE,
) -> list[dict[str, Any]]:
    """Waits for event lines with each (EVENT, path) of `expected` (optionally of one
    watcher) and returns every matching line; fails if any came later than `deadline`
    seconds after this call, or not at all."""
    started = time.monotonic()
    while True:
        lines = [
            line
            for line in system.events(node, namespace)
            if not watcher or line.get("watcher") == watcher
        ]
        seen = {(line.get("event"), line.get("path")) for line in lines}
        missing = [pair for pair in expected if pair not in seen]
        elapsed = time.monotonic() - started
        if not missing:
            assert elapsed <= deadline, f"events arrived after {elapsed:.1f} s (> {deadline} s)"
            return lines
        if elapsed > deadline + GRACE:
            got = sorted(seen, key=str)
            raise AssertionError(f"missing {missing} after {elapsed:.1f} s; got {got}")
        time.sleep(0.1)


def no_events(system: FimSystem, node: str, namespace: str, path: str, wait: float = 2.0) -> None:
    """Asserts that no event line for `path` shows up within `wait` seconds."""
    time.sleep(wait)
    found = [line for line in system.events(node, namespace) if line.get("path") == path]
    assert not found, f"unexpected events for {path}: {found}"
