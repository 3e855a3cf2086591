"""Event and operational lines, and file names a hostile pod chooses (issue 11)."""

from __future__ import annotations

import base64
import json

import pytest

from services.fimd.lines import (
    EventRenderer,
    Identity,
    decode_path,
    escape_control,
    format_time,
    op_line,
    path_fields,
    raw_path,
    split_path,
)
from services.fimd.logformat import compile_template

IN_MODIFY, IN_CREATE, IN_ISDIR = 0x2, 0x100, 0x40000000
IN_MOVED_TO = 0x80
T = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
IDENTITY = Identity("node-1", "shop", "web-0", "app", "shop/myapp-logs")
JSON_SHAPED = (
    '{{"kind":"event","event":"{event}","path":"{path}","pathBytes":"{pathBytes}",'
    '"dir":"{dir}","file":"{file}","watcher":"{watcher}"}}'
)
# Every character str.splitlines() splits on, and the rest of C0, DEL and C1.
LINE_BREAKERS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
CONTROLS = "".join(map(chr, (*range(0x20), *range(0x7F, 0xA0)))) + "\u2028\u2029"


def json_line(path: bytes, mask: int = IN_MODIFY) -> str:
    (line,) = EventRenderer(IDENTITY, [{}], None).render(T, mask, 0, path)
    return line


def template_line(template: str, path: bytes) -> str:
    (line,) = EventRenderer(IDENTITY, [{}], compile_template(template)).render(
        T, IN_MODIFY, 0, path
    )
    return line


def one_line(line: str) -> str:
    """`line` without its newline, asserting it is exactly one line for every splitter."""
    assert line.endswith("\n")
    assert line.splitlines(keepends=True) == [line]
    assert line.encode().splitlines(keepends=True) == [line.encode()]
    return line[:-1]


def test_time_is_rfc3339_utc_with_microseconds() -> None:
    assert format_time(T) == "2023-11-14T22:13:20.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"


def test_json_event_line_has_every_contract_field() -> None:
    renderer = EventRenderer(IDENTITY, [{}, {"team": "payments"}], None)
    (line,) = renderer.render(T, IN_MODIFY, 1, b"/var/log/app.log")
    assert json.loads(one_line(line)) == {
        "kind": "event",
        "time": "2023-11-14T22:13:20.123456Z",
        "node": "node-1",
        "namespace": "shop",
        "pod": "web-0",
        "container": "app",
        "watcher": "shop/myapp-logs",
        "event": "MODIFY",
        "path": "/var/log/app.log",
        "isDir": False,
        "tags": {"team": "payments"},
    }


def test_directory_event_and_quotes_and_newlines_in_names() -> None:
    parsed = json.loads(one_line(json_line(b'/srv/a"\n\\b', IN_CREATE | IN_ISDIR)))
    assert parsed["isDir"] is True
    assert parsed["event"] == "CREATE"
    assert parsed["path"] == '/srv/a"\n\\b'
    assert "pathBytes" not in parsed


def test_non_ascii_utf8_stays_readable() -> None:
    line = json_line("/srv/café/日本".encode())
    assert "/srv/café/日本" in line
    assert json.loads(line)["path"] == "/srv/café/日本"


@pytest.mark.parametrize("char", CONTROLS)
def test_every_control_and_separator_in_a_json_line_is_escaped(char: str) -> None:
    path = f"/srv/a{char}b"
    text = one_line(json_line(path.encode()))
    assert char not in text
    assert json.loads(text)["path"] == path


@pytest.mark.parametrize("char", CONTROLS)
def test_every_control_and_separator_in_a_template_line_is_escaped(char: str) -> None:
    path = f"/srv/a{char}b"
    text = one_line(template_line(JSON_SHAPED, path.encode()))
    assert char not in text
    parsed = json.loads(text)
    assert parsed["path"] == path
    assert parsed["file"] == f"a{char}b"


def test_bidi_controls_are_escaped_too() -> None:
    path = "/srv/\u202etxt.exe"
    assert "\u202e" not in json_line(path.encode())
    assert "\\u202e" in json_line(path.encode())
    assert json.loads(json_line(path.encode()))["path"] == path


def test_a_forging_directory_name_parses_back_to_the_true_event_and_path() -> None:
    hostile = b'/data/x","event":"ACCESS","path":"/etc/shadow/y'
    parsed = json.loads(one_line(template_line(JSON_SHAPED, hostile)))
    assert parsed["event"] == "MODIFY"
    assert parsed["path"] == hostile.decode()
    assert parsed["dir"] == '/data/x","event":"ACCESS","path":"/etc/shadow'
    assert parsed["watcher"] == "shop/myapp-logs"
    # And a name that tries to end the line and write an op line of its own.
    forged = b'/x"}\n{"kind":"op","msg":"started'
    parsed = json.loads(one_line(template_line(JSON_SHAPED, forged)))
    assert (parsed["kind"], parsed["path"]) == ("event", forged.decode())


def test_backslash_cannot_unescape_the_closing_quote() -> None:
    hostile = b"/x\\"
    parsed = json.loads(one_line(template_line('{{"path":"{path}","event":"{event}"}}', hostile)))
    assert parsed == {"path": "/x\\", "event": "MODIFY"}


def test_byte_ff_and_a_literal_backslash_x_ff_name_differ_and_decode_back() -> None:
    byte = b"/srv/\xff"
    literal = b"/srv/\\xff"  # the four characters \ x f f
    byte_line, literal_line = json_line(byte), json_line(literal)
    assert byte_line != literal_line
    byte_parsed, literal_parsed = json.loads(byte_line), json.loads(literal_line)
    assert byte_parsed["path"] == "/srv/\ufffd"
    assert byte_parsed["pathBytes"] == base64.b64encode(byte).decode()
    assert literal_parsed["path"] == "/srv/\\xff"
    assert "pathBytes" not in literal_parsed
    for raw, parsed in ((byte, byte_parsed), (literal, literal_parsed)):
        assert raw_path(parsed["path"], parsed.get("pathBytes", "")) == raw
    # The same in a template.
    byte_t, literal_t = (json.loads(template_line(JSON_SHAPED, p)) for p in (byte, literal))
    assert byte_t["path"] != literal_t["path"]
    assert raw_path(byte_t["path"], byte_t["pathBytes"]) == byte
    assert raw_path(literal_t["path"], literal_t["pathBytes"]) == literal


def test_a_name_holding_u_fffd_is_not_taken_for_invalid_utf8() -> None:
    raw = "/srv/\ufffd".encode()
    parsed = json.loads(json_line(raw))
    assert "pathBytes" not in parsed
    assert raw_path(parsed["path"]) == raw
    assert parsed != json.loads(json_line(b"/srv/\xff"))


@pytest.mark.parametrize(
    "name",
    [
        b"\xff" * 255,
        b"\x80" * 255,
        bytes(range(0x80, 0x100)) + b"\xfe" * 127,  # every high byte
        (b"\xed\xa0\x80" * 85),  # UTF-8-encoded surrogates are not UTF-8
        b"\xc0\xaf" * 127 + b"\n",  # overlong '/' and a newline
        "\u2028".encode() * 85,
    ],
)
def test_255_byte_hostile_names(name: bytes) -> None:
    assert len(name) == 255
    raw = b"/srv/" + name
    for line in (json_line(raw), template_line(JSON_SHAPED, raw)):
        parsed = json.loads(one_line(line))
        assert raw_path(parsed["path"], parsed.get("pathBytes", "")) == raw
        assert len(line.encode()) < 2048


def test_split_path_and_path_fields() -> None:
    assert split_path(b"/a") == ("/a", "")
    assert split_path(b"/a\xff") == ("/a\ufffd", "L2H/")
    assert decode_path(b"/a\xff") == "/a\ufffd"
    assert path_fields(b"/a") == {"path": "/a"}
    assert path_fields(b"/a\xff") == {"path": "/a\ufffd", "pathBytes": "L2H/"}
    assert path_fields(b"\xff", "file") == {"file": "\ufffd", "fileBytes": "/w=="}


def test_escape_control_escapes_like_a_template_value() -> None:
    assert escape_control('a"b\\c\nd\x85e\u2028') == 'a\\"b\\\\c\\nd\\u0085e\\u2028'


def test_template_line_with_compat_names() -> None:
    template = compile_template("{event} {ftype} '{dir}{sep}{file}' {watcher} {isDir}")
    renderer = EventRenderer(IDENTITY, [{"b": "2", "a": "1"}], template)
    assert renderer.render(T, IN_MODIFY, 0, b"/etc/passwd") == [
        "MODIFY file '/etc/passwd' shop/myapp-logs false\n"
    ]
    (root,) = EventRenderer(IDENTITY, [{}], compile_template("[{dir}][{sep}][{file}]")).render(
        T, IN_CREATE, 0, b"/top"
    )
    assert root == "[/][][top]\n"


def test_tags_in_a_template_are_escaped_like_every_value() -> None:
    renderer = EventRenderer(IDENTITY, [{"b": "2", "a": "1"}], compile_template('"{tags}"'))
    (line,) = renderer.render(T, IN_MODIFY, 0, b"/etc/passwd")
    assert line == '"{\\"a\\":\\"1\\",\\"b\\":\\"2\\"}"\n'
    assert json.loads(json.loads(line)) == {"a": "1", "b": "2"}


def test_one_line_per_event_name() -> None:
    renderer = EventRenderer(IDENTITY, [{}], compile_template("{event} {path}"))
    assert renderer.render(T, IN_MOVED_TO | IN_CREATE, 0, b"/a\nb") == [
        "MOVEDTO /a\\nb\n",
        "CREATE /a\\nb\n",
    ]


def test_op_line_is_distinguishable_and_escaped() -> None:
    line = op_line(
        "node-1",
        "watch_error",
        "error",
        pod="web-0",
        detail="a\u2028b\x85",
        **path_fields(b"/\xff"),
    )
    parsed = json.loads(one_line(line))
    assert parsed["kind"] == "op"
    assert parsed["msg"] == "watch_error"
    assert parsed["level"] == "error"
    assert parsed["pod"] == "web-0"
    assert parsed["detail"] == "a\u2028b\x85"
    assert (parsed["path"], parsed["pathBytes"]) == ("/\ufffd", "L/8=")


def test_lone_surrogates_from_outside_never_break_a_line() -> None:
    # os error messages carry undecodable file names as lone surrogates (surrogateescape).
    line = op_line("node-1", "watch_error", "error", detail="/x\udcff")
    assert json.loads(one_line(line))["detail"] == "/x\ufffd"
    assert line.encode()
