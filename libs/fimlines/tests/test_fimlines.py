"""Reading fimd's lines."""

from __future__ import annotations

import base64

import pytest

from libs.fimlines import (
    MAX_LINE_BYTES,
    UNSAFE,
    has_unsafe,
    neutralise,
    parse,
    raw_path,
    shown_path,
)


def test_parse() -> None:
    assert parse('{"kind":"event","path":"/a"}\n') == {"kind": "event", "path": "/a"}
    assert parse("  {}") == {}
    for line in ["[1]", "plain text", '{"a":', "", "{" + " " * MAX_LINE_BYTES + "}", '"{"']:
        assert parse(line) is None


def test_raw_path() -> None:
    assert raw_path("/a/é") == "/a/é".encode()
    assert raw_path("/srv/\ufffd", "L3Nydi//") == b"/srv/\xff"
    with pytest.raises(ValueError, match="base64"):
        raw_path("/x", "!!")


def test_neutralise_every_unsafe_character() -> None:
    for code in UNSAFE:
        shown = neutralise(f"a{chr(code)}b")
        assert shown in (f"a\\x{code:02x}b", f"a\\u{code:04x}b")
        assert not has_unsafe(shown)
    assert neutralise("plain/é/文") == "plain/é/文"
    assert neutralise("a\\b") == "a\\\\b"
    assert neutralise("\ud800") == "\\ud800"


def test_shown_path() -> None:
    raw = b"/srv/\xff\x1b[2J/\xc3\xa9"
    assert shown_path(raw.decode("utf-8", "replace"), base64.b64encode(raw).decode()) == (
        "/srv/\\xff\\x1b[2J/é"
    )
    assert shown_path("/srv/\\xff") == "/srv/\\\\xff"
    assert shown_path("/x\x1b", "not base64!") == "/x\\x1b"
