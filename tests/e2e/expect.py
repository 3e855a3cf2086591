"""Waiting for fimd's event lines, and for a watch to be in place before a file is written.

The tests write a file once, after the watch is known to be active, and never again: a lost
first event or a slow re-arm fails the test instead of being hidden by retries.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tests.e2e.system import FimSystem

# The design's promise: an event line in `kubectl logs` of the node's fimd within 2 s.
DEADLINE = 2.0
# Keep polling past the deadline so a late line is reported as late, not as missing.
GRACE = 15.0
# Re-arm time: once a watch's new container, new pod or new fimd pod is running (or an
# updated FimWatcher is applied), fimd reports the watch active again within this many
# seconds (docs/testing.md). The controller reacts to the pod and fimd-pod watches, not to
# its periodic sweep, so this is well below --resync-period (60 s).
REARM = 30.0
# After the expected lines arrived, wait this long before counting them: a duplicate that
# arrives late (a second watch doing the same work) is caught, not missed.
SETTLE = 3.0
# fimd's lines that say a watch (incarnation) is in place: first READY, READY again after it
# was lost (a restart), or an updated spec in effect.
ARMED = ("watch_active", "watch_resumed", "update_active")


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


def armed_count(system: FimSystem, node: str, namespace: str, pod: str) -> int:
    """How many times fimd on `node` (its current pod) reported a watch of `pod` in place."""
    return sum(
        1
        for line in system.lines(node)
        if line.get("kind") == "op"
        and line.get("msg") in ARMED
        and line.get("namespace") == namespace
        and line.get("pod") == pod
    )


def armed(
    system: FimSystem, node: str, namespace: str, pod: str, before: int, *, timeout: float = REARM
) -> float:
    """Waits until fimd reports a watch of `pod` in place more often than `before` (count
    taken before the change); fails after `timeout` (the re-arm time). Returns the seconds."""
    started = time.monotonic()
    while True:
        count = armed_count(system, node, namespace, pod)
        elapsed = time.monotonic() - started
        if count > before:
            return elapsed
        if elapsed > timeout:
            raise AssertionError(
                f"watch of {namespace}/{pod} not re-armed within {timeout} s "
                f"({count} {'/'.join(ARMED)} lines, {before} before)"
            )
        time.sleep(0.2)


def exactly_once(
    system: FimSystem,
    node: str,
    namespace: str,
    expected: list[tuple[str, str]],
    *,
    watcher: str = "",
    settle: float = SETTLE,
) -> list[dict[str, Any]]:
    """`events`, then after `settle` seconds each (EVENT, path) of `expected` must have exactly
    one line (per watcher, if `watcher` is empty); returns the lines."""
    events(system, node, namespace, expected, watcher=watcher)
    time.sleep(settle)
    lines = [
        line
        for line in system.events(node, namespace)
        if (line.get("event"), line.get("path")) in expected
        and (not watcher or line.get("watcher") == watcher)
    ]
    counts = Counter((line.get("watcher"), line.get("event"), line.get("path")) for line in lines)
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert not duplicates, f"duplicate event lines after {settle} s: {duplicates}"
    return lines
