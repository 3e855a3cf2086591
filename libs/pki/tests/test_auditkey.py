"""The audit key ring Secret: created once, rotated when due, old generations kept, never
overwritten when it does not parse."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest

from libs.auditstream import keys
from libs.pki.auditkey import FILE, SECRET, AuditKeyError, ensure_audit_key
from libs.pki.tests.fakes import MemoryStore

NOW = datetime(2026, 12, 1, 3, 17, tzinfo=UTC)
DAY = timedelta(days=1)


def ring(store: MemoryStore) -> keys.KeyRing:
    return keys.loads(store.secrets[SECRET].data[FILE])


def test_created_once_then_left_alone_until_due() -> None:
    store = MemoryStore()
    assert ensure_audit_key(store, NOW) == "created"
    first = ring(store)
    assert first.current == 1
    assert ensure_audit_key(store, NOW + 29 * DAY) == "current"
    assert store.writes == [SECRET]
    assert ensure_audit_key(store, NOW + 30 * DAY) == "rotated to generation 2"
    second = ring(store)
    assert second.current == 2
    assert second.generations[1] == first.generations[1]  # old lines stay verifiable
    assert second.node_key("n1").key != first.node_key("n1").key


def test_only_the_newest_generations_are_kept() -> None:
    store = MemoryStore()
    ensure_audit_key(store, NOW, every=DAY, keep=3)
    for day in range(1, 6):
        ensure_audit_key(store, NOW + day * DAY, every=DAY, keep=3)
    assert sorted(ring(store).generations) == [4, 5, 6]


def test_a_ring_that_does_not_parse_is_not_overwritten() -> None:
    store = MemoryStore()
    store.create(SECRET, {FILE: b"garbage"})
    with pytest.raises(AuditKeyError, match="not overwritten"):
        ensure_audit_key(store, NOW)
    assert store.secrets[SECRET].data == {FILE: b"garbage"}


class RacingStore(MemoryStore):
    """Another Job rotates the ring between this one's read and its write, once."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def update(self, name: str, data: Mapping[str, bytes], version: str) -> None:
        if not self.raced:
            self.raced = True
            other = keys.rotate(keys.loads(self.secrets[name].data[FILE]), NOW + 40 * DAY,
                                every=DAY)  # fmt: skip
            self._put(name, {FILE: other.dumps()})
        super().update(name, data, version)


def test_a_concurrent_rotation_is_read_again_not_doubled() -> None:
    store = RacingStore()
    ensure_audit_key(store, NOW)
    assert ensure_audit_key(store, NOW + 40 * DAY) == "current"
    assert ring(store).current == 2
    assert store.raced
    assert store.writes == [SECRET, SECRET]  # created, then the other Job's rotation only
