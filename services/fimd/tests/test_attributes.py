"""The pure part of file attributes: the JSON members of an event line and the bounded
last known states of a watch."""

from __future__ import annotations

import json
import stat

import pytest

from libs.rootfs.reader import FileState, NotRegular
from services.fimd import attributes
from services.fimd.attributes import LastKnown, Unread, render
from services.fimd.lines import EventRenderer, Identity

SHA_A = "a" * 64
SHA_B = "b" * 64


def _state(size: int = 4, sha256: str = SHA_A, skipped: str = "", mode: int = 0o644) -> FileState:
    return FileState(
        size=size,
        mode=stat.S_IFREG | mode,
        uid=1000,
        gid=2000,
        mtime_ns=1_767_225_600_123_456_789,
        sha256=sha256,
        skipped=skipped,
    )


def _members(extra: str) -> dict[str, object]:
    parsed: dict[str, object] = json.loads("{" + extra[1:] + "}") if extra else {}
    return parsed


def test_after_and_previous_with_hash() -> None:
    extra = render(_state(sha256=SHA_B, size=5), _state(), with_hash=True)
    assert _members(extra) == {
        "sha256": SHA_B,
        "size": 5,
        "mode": "0644",
        "uid": 1000,
        "gid": 2000,
        "mtime": "2026-01-01T00:00:00.123456Z",
        "previous": {
            "sha256": SHA_A,
            "size": 4,
            "mode": "0644",
            "uid": 1000,
            "gid": 2000,
            "mtime": "2026-01-01T00:00:00.123456Z",
        },
    }
    assert next(iter(_members(extra))) == "sha256"


def test_attributes_without_hash_leave_the_hash_out() -> None:
    members = _members(render(_state(), None, with_hash=False))
    assert "sha256" not in members
    assert "previous" not in members
    assert members["size"] == 4


@pytest.mark.parametrize(
    ("mode", "text"), [(0o644, "0644"), (0o4755, "4755"), (0o1777, "1777"), (0, "0000")]
)
def test_mode_is_octal_with_the_special_bits(mode: int, text: str) -> None:
    assert _members(render(_state(mode=mode), None, with_hash=False))["mode"] == text


def test_a_skipped_hash_says_why_instead_of_sha256() -> None:
    skipped = _state(sha256="", skipped="size 70000000 is over the cap 67108864")
    members = _members(render(skipped, None, with_hash=True))
    assert members["hashSkipped"] == "size 70000000 is over the cap 67108864"
    assert "sha256" not in members
    assert members["size"] == 4


def test_a_gone_file_has_only_its_previous_state() -> None:
    members = _members(render(NotRegular("missing"), _state(), with_hash=True))
    assert set(members) == {"previous"}
    assert render(NotRegular("missing"), None, with_hash=True) == ""


def test_an_unread_file_says_why_under_the_subjects_key() -> None:
    assert _members(render(Unread("the hash backlog is full"), None, with_hash=True)) == {
        "hashSkipped": "the hash backlog is full"
    }
    assert _members(render(Unread("container root: gone"), _state(), with_hash=False)) == {
        "attributesSkipped": "container root: gone",
        "previous": _members(render(_state(), None, with_hash=False)),
    }


def test_a_reason_cannot_break_the_line() -> None:
    hostile = 'x"\n\u2028}'
    extra = render(Unread(hostile), None, with_hash=True)
    assert "\n" not in extra
    assert "\u2028" not in extra
    assert _members(extra)["hashSkipped"] == hostile


def test_the_event_line_carries_the_members_as_valid_json() -> None:
    renderer = EventRenderer(Identity("n", "ns", "p", "c", "ns/w"), [{}], None)
    extra = render(_state(), None, with_hash=True)
    (line,) = renderer.render(1_000, 0x8, 0, b"/etc/app.conf", extra)
    parsed = json.loads(line)
    assert parsed["path"] == "/etc/app.conf"
    assert parsed["sha256"] == SHA_A
    assert line.endswith("}\n")
    (plain,) = renderer.render(1_000, 0x8, 0, b"/etc/app.conf")
    assert "sha256" not in json.loads(plain)


def test_last_known_returns_the_previous_state_and_remembers_gone_files() -> None:
    known = LastKnown()
    assert not known.knows(b"/f")
    assert known.update(b"/f", _state(sha256=SHA_A)) is None
    assert known.knows(b"/f")
    assert known.update(b"/f", _state(sha256=SHA_B)) == _state(sha256=SHA_A)
    assert known.update(b"/f", Unread("backlog")) == _state(sha256=SHA_B)
    assert known.get(b"/f") == _state(sha256=SHA_B)  # unread: still the last known
    assert known.update(b"/f", NotRegular("missing")) == _state(sha256=SHA_B)
    assert known.get(b"/f") is None
    assert known.knows(b"/f")  # reported as gone: no regular file before the next event
    assert len(known) == 1
    assert known.update(b"/f", _state(sha256=SHA_A)) is None
    assert known.update(b"/g", Unread("backlog")) is None
    assert not known.knows(b"/g")  # never read: not reported


def test_the_first_previous_is_the_stored_state_until_the_watch_forgets() -> None:
    stored = _state(sha256=SHA_B)
    known = LastKnown(max_entries=2)
    assert attributes.first_previous(known, b"/f", stored) == stored
    assert attributes.first_previous(known, b"/f", None) is None
    known.update(b"/f", NotRegular("missing"))
    assert attributes.first_previous(known, b"/f", stored) is None  # reported gone since
    known.update(b"/g", _state())
    assert attributes.first_previous(known, b"/h", stored) == stored
    known.update(b"/h", _state())  # /f out: the watch may have reported a newer state
    assert known.evicted == 1
    assert attributes.first_previous(known, b"/i", stored) is None


def test_last_known_is_bounded_in_entries_least_recent_out() -> None:
    known = LastKnown(max_entries=3)
    for i in range(5):
        known.update(b"/f%d" % i, _state(size=i))
    assert len(known) == 3
    assert known.evicted == 2
    assert known.get(b"/f0") is None
    assert known.get(b"/f4") == _state(size=4)


def test_last_known_is_bounded_in_bytes() -> None:
    cost = 100 + attributes.ENTRY_OVERHEAD
    known = LastKnown(max_bytes=2 * cost)
    for i in range(3):
        known.update(bytes([65 + i]) * 100, _state())
    assert len(known) == 2
    assert known.evicted == 1
    known.update(b"x" * (3 * cost), _state())  # alone over the bound: not kept
    assert known.get(b"x" * (3 * cost)) is None
    assert known.evicted == 2
    assert len(known) == 2
