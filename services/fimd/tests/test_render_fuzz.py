"""Property-based fuzz tests (hypothesis, a fixed and derandomized example budget) of the
event line renderers with arbitrary byte paths, of value escaping, and of the logFormat
parser against the CRD pattern and the FimWatcher model."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.masks import IN_ISDIR, names_for
from libs.k8s import logformat as grammar
from libs.k8s.errors import ModelError
from libs.k8s.model import FimWatcherSpec, Subject
from libs.k8s.selector import LabelSelector
from services.fimd.lines import EventRenderer, Identity, raw_path
from services.fimd.logformat import PLACEHOLDERS, TemplateError, compile_template, escape_value

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None)

IDENTITY = Identity("node-1", "shop", "web-0", "app", "shop/myapp-logs")
T = 1_700_000_000_123_456_789
ALL_BITS = 0xFFF  # IN_ACCESS .. IN_OPEN and the close/move bits
JSON_SHAPED = (
    '{{"event":"{event}","path":"{path}","pathBytes":"{pathBytes}","dir":"{dir}",'
    '"sep":"{sep}","file":"{file}","isDir":"{isDir}","ftype":"{ftype}","tags":"{tags}",'
    '"time":"{time}","node":"{node}","namespace":"{namespace}","pod":"{pod}",'
    '"container":"{container}","watcher":"{watcher}"}}'
)
# Fragments a hostile pod would put in file names, and arbitrary bytes between them.
HOSTILE = [
    b"\xff",
    b"\\",
    b"\\xff",
    b'"',
    b'","event":"ACCESS","path":"',
    b"\n",
    b"\r",
    b"\x00",
    b"\x1b[2J",
    "\u2028".encode(),
    "\u2029".encode(),
    "\x85".encode(),
    "\u202e".encode(),
    "\ufffd".encode(),
    b"\xc2",  # a truncated sequence
    b"\xed\xa0\x80",  # an encoded surrogate
    b"\xc0\xaf",  # an overlong '/'
    b"{",
    b"}",
    b"/",
    b"a",
    "é日\U0001f600".encode(),
]
paths = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(HOSTILE) | st.binary(max_size=4), max_size=40).map(b"".join),
    st.text(max_size=80).map(str.encode),
)
masks = st.builds(
    lambda bits, is_dir: bits | (IN_ISDIR if is_dir else 0),
    st.integers(min_value=1, max_value=ALL_BITS),
    st.booleans(),
)
# Whole-line splitters for every line of output.
SPLITTERS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"


def one_line(line: str) -> str:
    assert line.endswith("\n")
    body = line[:-1]
    assert line.splitlines(keepends=True) == [line]
    assert not any(char in body for char in SPLITTERS)
    assert line.encode().splitlines(keepends=True) == [line.encode()]
    return body


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(raw=paths, mask=masks)
@example(raw=b"/srv/\xff", mask=2)
@example(raw=b"/srv/\\xff", mask=2)
@example(raw=b'/x","event":"ACCESS","path":"/y', mask=2)
def test_json_lines_are_one_valid_json_line_and_round_trip_the_path(raw: bytes, mask: int) -> None:
    lines = EventRenderer(IDENTITY, [{"team": "a"}], None).render(T, mask, 0, raw)
    for line, name in zip(lines, names_for(mask), strict=True):
        parsed = json.loads(one_line(line))
        assert parsed["event"] == name.upper()
        assert parsed["isDir"] is bool(mask & IN_ISDIR)
        assert ("pathBytes" in parsed) is not is_utf8(raw)
        assert raw_path(parsed["path"], parsed.get("pathBytes", "")) == raw
        assert parsed["watcher"] == "shop/myapp-logs"
        assert parsed["tags"] == {"team": "a"}


@FUZZ
@given(raw=paths, mask=masks)
def test_json_shaped_template_lines_parse_back_to_the_true_values(raw: bytes, mask: int) -> None:
    renderer = EventRenderer(IDENTITY, [{"team": "a"}], compile_template(JSON_SHAPED))
    lines = renderer.render(T, mask, 0, raw)
    for line, name in zip(lines, names_for(mask), strict=True):
        parsed = json.loads(one_line(line))
        assert parsed["event"] == name.upper()
        assert raw_path(parsed["path"], parsed["pathBytes"]) == raw
        assert (parsed["pathBytes"] == "") is is_utf8(raw)
        assert parsed["dir"] + parsed["sep"] + parsed["file"] == parsed["path"]
        assert parsed["isDir"] == ("true" if mask & IN_ISDIR else "false")
        assert json.loads(parsed["tags"]) == {"team": "a"}
        assert parsed["watcher"] == "shop/myapp-logs"


@FUZZ
@given(raw=paths)
def test_a_plain_template_value_is_a_json_string_body(raw: bytes) -> None:
    renderer = EventRenderer(IDENTITY, [{}], compile_template("{path}\t{pathBytes}"))
    (line,) = renderer.render(T, 2, 0, raw)
    path, path_bytes = one_line(line).split("\t")
    assert raw_path(json.loads(f'"{path}"'), path_bytes) == raw


def literal_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(
        st.characters(exclude_categories=["Cs"]).filter(
            lambda c: re.fullmatch(grammar.FORBIDDEN_CHARACTERS, c) is None
        ),
        max_size=max_size,
    )


templates = st.lists(
    st.tuples(literal_text(12), st.sampled_from(("", *PLACEHOLDERS))), max_size=8
).map(lambda parts: grammar.unparse(tuple(parts)))


@FUZZ
@given(template=templates, raw=paths, mask=masks)
def test_any_valid_template_renders_exactly_one_line(template: str, raw: bytes, mask: int) -> None:
    compiled = compile_template(template)
    assert grammar.unparse(compiled.parts) == template
    lines = EventRenderer(IDENTITY, [{"a": "b"}], compiled).render(T, mask, 0, raw)
    assert len(lines) == len(names_for(mask))
    for line in lines:
        one_line(line)


@FUZZ
@given(text=st.text(st.characters(exclude_categories=["Cs"]), max_size=60))
def test_escaped_values_are_json_string_bodies(text: str) -> None:
    escaped = escape_value(text)
    assert json.loads(f'"{escaped}"') == text
    assert not any(char in escaped for char in SPLITTERS)
    assert re.search(grammar.FORBIDDEN_CHARACTERS, escaped) is None
    # No unescaped quote: every '"' is preceded by an odd run of backslashes.
    for match in re.finditer('"', escaped):
        run = len(escaped[: match.start()]) - len(escaped[: match.start()].rstrip("\\"))
        assert run % 2 == 1


TEMPLATE_ATOMS = [
    "{",
    "}",
    "{{",
    "}}",
    "a",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x0b",
    "\x1e",
    "\x7f",
    "\x85",
    "\xa0",
    "\u2028",
    "\u2029",
    "é",
    '"',
    ":",
    "!r",
    ".__class__",
    *PLACEHOLDERS,
    *(f"{{{name}}}" for name in PLACEHOLDERS),
]
template_texts = st.one_of(
    st.lists(st.sampled_from(TEMPLATE_ATOMS), max_size=12).map("".join),
    st.text(max_size=40),
)
CRD = re.compile(grammar.CRD_PATTERN)


def spec(log_format: str) -> FimWatcherSpec:
    subject = Subject(paths=("/var/log",), events=frozenset({EventName.MODIFY}))
    return FimWatcherSpec(selector=LabelSelector(), subjects=(subject,), log_format=log_format)


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(text=template_texts)
@example(text="{{{path}}}")
@example(text="{path}}")
@example(text="{pathBytes}")
def test_parser_crd_pattern_and_model_agree(text: str) -> None:
    try:
        parts = grammar.parse(text)
    except TemplateError:
        parts = None
    assert (CRD.fullmatch(text) is not None) is (parts is not None)
    if parts is None:
        with pytest.raises(ModelError, match=r"^logFormat: "):
            spec(text)
        with pytest.raises(TemplateError):
            compile_template(text)
    else:
        assert grammar.unparse(parts) == text
        assert spec(text).log_format == text
        assert compile_template(text).parts == parts
