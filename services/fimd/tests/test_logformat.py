"""logFormat templates: the one grammar (libs/k8s/logformat.py), its CRD pattern, and the
escaping of placeholder values."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from libs.k8s import logformat as grammar
from services.fimd.logformat import (
    PLACEHOLDERS,
    TemplateError,
    compile_template,
    escape_value,
)

# The repository root, or in Bazel the runfiles root (data: //deploy/base:manifests).
CRD = Path(__file__).parents[3] / "deploy" / "base" / "crd.yaml"

BAD_TEMPLATES = [
    ("{nope}", "unknown placeholder {nope} at offset 0; known: {time}"),
    ("{path.__class__}", "unknown placeholder {path.__class__}"),
    ("{path!r}", "unknown placeholder {path!r}"),
    ("{path:>10}", "unknown placeholder {path:>10}"),
    ("{Path}", "unknown placeholder {Path}"),
    ("{}", "unknown placeholder {}"),
    ('{"path":"{path}"}', 'unknown placeholder {"path":"{path}'),
    ("a {path", "unclosed '{' at offset 2"),
    ("{{path}}}", "single '}' at offset 8"),
    ("a } b", "single '}' at offset 2"),
    ("{path}}", "single '}' at offset 6"),
    ("{path}\n{event}", "'\\n' at offset 6: one event is one line"),
    ("{path}\r", "'\\r' at offset 6"),
    ("\x00", "'\\x00' at offset 0"),
    ("a\x0bb", "'\\x0b' at offset 1"),
    ("a\x1eb", "'\\x1e' at offset 1"),
    ("a\x7f", "'\\x7f' at offset 1"),
    ("a\x85", "'\\x85' at offset 1"),
    ("a\x9f", "'\\x9f' at offset 1"),
    ("a\u2028", "'\\u2028' at offset 1"),
    ("a\u2029", "'\\u2029' at offset 1"),
]
GOOD_TEMPLATES = [
    "",
    "static",
    "{path}",
    "{{x}} {event}\t{path}",
    '{{"event":"{event}","path":"{path}","pathBytes":"{pathBytes}"}}',
    "{{{path}}}",
    "}}{{",
    "café \xa0 日本 \U0001f600 \u202e",
    " ".join(f"{{{name}}}" for name in PLACEHOLDERS),
]


def crd_log_format_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["logFormat"]
    return schema


def crd_accepts(pattern: str, text: str) -> bool:
    """The API server's check: RE2 `MatchString` of an anchored pattern = Python fullmatch."""
    return re.fullmatch(pattern, text) is not None


def test_renders_placeholders_and_literal_braces() -> None:
    template = compile_template("{{x}} {event} {ftype} '{dir}{sep}{file}' ({pod}:{node})")
    values = dict.fromkeys(PLACEHOLDERS, "?") | {
        "event": "MODIFY",
        "ftype": "file",
        "dir": "/var/log",
        "sep": "/",
        "file": "a.log",
        "pod": "web-0",
        "node": "n1",
    }
    assert template.render(values) == "{x} MODIFY file '/var/log/a.log' (web-0:n1)"
    assert template.names == {"event", "ftype", "dir", "sep", "file", "pod", "node"}


def test_plain_text_is_a_template_without_placeholders() -> None:
    assert compile_template("static").render({}) == "static"


@pytest.mark.parametrize(("text", "message"), BAD_TEMPLATES)
def test_rejects_invalid_templates_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(text)
    assert message in str(err.value)


@pytest.mark.parametrize("text", GOOD_TEMPLATES)
def test_accepts_valid_templates(text: str) -> None:
    assert grammar.unparse(compile_template(text).parts) == text


def test_tab_is_allowed() -> None:
    assert compile_template("{event}\t{path}").names == {"event", "path"}


def test_every_value_is_escaped_like_the_inside_of_a_json_string() -> None:
    template = compile_template('{{"path":"{path}","event":"{event}"}}')
    hostile = 'x","event":"ACCESS","path":"\\\n\u2028\x85\x1b'
    line = template.render({"path": hostile, "event": "MODIFY"})
    assert "\n" not in line
    assert "\u2028" not in line
    assert "\x85" not in line
    assert json.loads(line) == {"path": hostile, "event": "MODIFY"}


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("plain/ascii and café", "plain/ascii and café"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        ("\\xff", "\\\\xff"),
        ("\b\t\n\f\r", "\\b\\t\\n\\f\\r"),
        ("\x00\x1b\x1f", "\\u0000\\u001b\\u001f"),
        ("\x7f\x80\x85\x9f\xa0", "\\u007f\\u0080\\u0085\\u009f\xa0"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202e\u2066\u061c", "\\u202e\\u2066\\u061c"),
        ("\udcff", "\\ufffd"),
    ],
)
def test_escape_value(value: str, escaped: str) -> None:
    assert escape_value(value) == escaped
    if value != "\udcff":
        assert json.loads(f'"{escaped}"') == value


def test_crd_pattern_is_the_grammar_of_the_one_parser() -> None:
    schema = crd_log_format_schema()
    assert schema["pattern"] == grammar.CRD_PATTERN
    assert schema["maxLength"] == 1024
    for name in PLACEHOLDERS:
        assert f"{{{name}}}" in schema["description"]


@pytest.mark.parametrize(("text", "message"), BAD_TEMPLATES)
def test_crd_pattern_rejects_what_the_parser_rejects(text: str, message: str) -> None:
    assert not crd_accepts(crd_log_format_schema()["pattern"], text), message


@pytest.mark.parametrize("text", GOOD_TEMPLATES)
def test_crd_pattern_accepts_what_the_parser_accepts(text: str) -> None:
    assert crd_accepts(crd_log_format_schema()["pattern"], text)


def test_crd_pattern_uses_only_syntax_re2_and_python_share() -> None:
    pattern = grammar.CRD_PATTERN
    assert pattern.startswith("^")
    assert pattern.endswith("$")
    # No \u, \z, \Z, \p, lookaround, backreferences or named groups (RE2 or Python lacks them).
    for construct in ("\\u", "\\z", "\\Z", "\\p", "(?=", "(?!", "(?<", "(?P", "\\1"):
        assert construct not in pattern
    assert re.findall(r"\\x(?!\{)", pattern)
    assert "\\x{" not in pattern
