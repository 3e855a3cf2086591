"""Builders for the tests: a ring and sealed fimd-like lines of one or more boots."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from libs.auditstream import keys
from libs.auditstream.seal import Sealer

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def ring(generations: int = 1) -> keys.KeyRing:
    counter = iter(range(1, 1000))
    fixed = lambda n: bytes([next(counter)]) * n  # noqa: E731 - deterministic secrets
    result = keys.new_ring(NOW, random=fixed)
    for step in range(1, generations):
        later = NOW.replace(day=1 + step)
        result = keys.rotate(result, later, every=NOW - NOW, random=fixed)
    return result


def stamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(NOW.timestamp() + seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event(node: str, i: int, seconds: float | None = None) -> bytes:
    record = {
        "kind": "event",
        "time": stamp(i if seconds is None else seconds),
        "node": node,
        "event": "MODIFY",
        "path": f"/etc/file-{i}",
    }
    return json.dumps(record, separators=(",", ":")).encode()


def heartbeat(node: str, seconds: float, lines: int, interval: int = 60) -> bytes:
    record = {
        "kind": "op",
        "time": stamp(seconds),
        "level": "info",
        "node": node,
        "msg": "heartbeat",
        "interval": interval,
        "lines": lines,
    }
    return json.dumps(record, separators=(",", ":")).encode()


def sealed(node: str, bodies: list[bytes], key_ring: keys.KeyRing, boot: str = "") -> list[bytes]:
    sealer = Sealer(key_ring.node_key(node), boot or None)
    return [sealer.seal(body) for body in bodies]


def boot_lines(node: str, count: int, key_ring: keys.KeyRing, boot: str = "") -> list[bytes]:
    """`count` event lines starting with a heartbeat, as one fimd boot seals them."""
    bodies = [heartbeat(node, 0, 0)] + [event(node, i) for i in range(1, count)]
    return sealed(node, bodies, key_ring, boot)
