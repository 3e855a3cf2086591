"""Key ring parsing, rotation and per-node derivation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from libs.auditstream import keys
from libs.auditstream.tests.streams import NOW, ring


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    okm = keys.hkdf_sha256(b"\x0b" * 22, bytes(range(13)), bytes(range(0xF0, 0xFA)), 42)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_node_keys_differ_per_node_and_generation_and_name_both() -> None:
    two = ring(2)
    a1, a2, b2 = two.node_key("a", 1), two.node_key("a"), two.node_key("b")
    assert (a1.kid, a2.kid, b2.kid) == ("a/1", "a/2", "b/2")
    assert len({a1.key, a2.key, b2.key}) == 3
    assert two.key_for("a/1") == a1
    with pytest.raises(keys.KeyRingError, match="generation 3"):
        two.key_for("a/3")
    with pytest.raises(keys.KeyRingError, match="not a key id"):
        two.key_for("A_b/1")


def test_ring_round_trips_and_rejects_bad_documents() -> None:
    original = ring(3)
    assert keys.loads(original.dumps()) == original
    bad = [
        b"not json",
        b'{"version":2,"current":1,"keys":[]}',
        b'{"version":1,"current":1,"keys":[]}',
        b'{"version":1,"current":2,"keys":[{"generation":1,"secret":"' + b"a" * 64
        + b'","created":"2026-12-01T10:00:00Z"}]}',
        b'{"version":1,"current":1,"keys":[{"generation":1,"secret":"short",'
        b'"created":"2026-12-01T10:00:00Z"}]}',
        b" " * (keys.MAX_RING_BYTES + 1),
    ]  # fmt: skip
    for data in bad:
        with pytest.raises(keys.KeyRingError):
            keys.loads(data)


def test_rotation_is_due_after_the_interval_and_keeps_the_newest_generations() -> None:
    start = keys.new_ring(NOW)
    every = timedelta(days=30)
    assert keys.rotate(start, NOW + timedelta(days=29), every=every) is start
    rotated = keys.rotate(start, NOW + every, every=every)
    assert rotated.current == 2
    assert rotated.generations[1] == start.generations[1]
    assert rotated.generations[2].secret != start.generations[1].secret
    current = rotated
    for step in range(2, 10):
        current = keys.rotate(current, NOW + every * step, every=every, keep=3)
    assert sorted(current.generations) == [8, 9, 10]
    assert current.current == 10
