"""The grammar of a FimWatcher `logFormat` template: the one parser, used by the FimWatcher
model (`libs.k8s.model`, when a resource is read) and by fimd (`services.fimd.logformat`,
which renders it), and the same grammar as a regular expression for the CRD schema.

Syntax: literal text with `{name}` placeholders (names in PLACEHOLDERS); `{{` and `}}` are
literal braces. Nothing else is interpreted: no format specs, attribute access or indexing
(a template comes from a user, so it must never reach `str.format`). The literal text may
contain no control character but tab (C0 U+0000..U+001F, DEL, C1 U+0080..U+009F) and no
line or paragraph separator (U+2028, U+2029): every event is exactly one line, whatever
splits lines downstream (Python's `str.splitlines()` splits on U+001C..U+001E and U+0085 too).

CRD_PATTERN accepts exactly the templates `parse` accepts (length aside: the model and the
CRD bound that separately). It is written for both Go's RE2 (the API server's OpenAPI
`pattern`) and Python's `re`: only `\\xNN` escapes (the same in both), U+2028/U+2029 as the
characters themselves, `(?:...)` groups, and `^...$` anchors (match it with `re.fullmatch`
in Python, where `$` also matches before a final newline).
"""

from __future__ import annotations

import re

#: Every placeholder name, in documentation order (see services/fimd/logformat.py).
PLACEHOLDERS: tuple[str, ...] = (
    "time",
    "node",
    "namespace",
    "pod",
    "container",
    "watcher",
    "event",
    "path",
    "pathBytes",
    "isDir",
    "tags",
    "ftype",
    "dir",
    "file",
    "sep",
    "count",
    "first",
    "last",
)
_KNOWN = frozenset(PLACEHOLDERS)

#: Characters a template's literal text must not contain (see the module docstring).
FORBIDDEN_CHARACTERS = "[\\x00-\\x08\\x0a-\\x1f\\x7f-\\x9f\u2028\u2029]"
_FORBIDDEN = re.compile(FORBIDDEN_CHARACTERS)

_LITERAL = "[^{}" + FORBIDDEN_CHARACTERS[1:-1] + "]"
#: The grammar as one anchored regular expression, valid in RE2 and Python (see above).
CRD_PATTERN = "^(?:" + _LITERAL + "|\\{\\{|\\}\\}|\\{(?:" + "|".join(PLACEHOLDERS) + ")\\})*$"


class TemplateError(ValueError):
    """The template cannot be parsed; the message says where and why."""


#: (literal, placeholder) pairs; the placeholder of the last pair may be "".
Parts = tuple[tuple[str, str], ...]


def _placeholder(text: str, start: int) -> tuple[str, int]:
    """Reads `{name}` at `start`; returns the name and the index after `}`."""
    end = text.find("}", start)
    if end < 0:
        raise TemplateError(f"unclosed '{{' at offset {start} (write {{{{ for a literal brace)")
    name = text[start + 1 : end]
    if name not in _KNOWN:
        raise TemplateError(
            f"unknown placeholder {{{name}}} at offset {start}; "
            f"known: {' '.join('{' + n + '}' for n in PLACEHOLDERS)} "
            "(write {{ and }} for literal braces)"
        )
    return name, end + 1


def parse(text: str) -> Parts:
    """Parses `text` into (literal, placeholder) pairs; raises TemplateError naming the first
    problem. The literals have `{{` and `}}` already turned into single braces."""
    if (bad := _FORBIDDEN.search(text)) is not None:
        raise TemplateError(
            f"control character or line separator {bad.group()!r} at offset {bad.start()}: "
            "one event is one line (tab is the only control character allowed)"
        )
    parts: list[tuple[str, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if text.startswith("{{", i) or text.startswith("}}", i):
            literal.append(char)
            i += 2
        elif char == "{":
            name, i = _placeholder(text, i)
            parts.append(("".join(literal), name))
            literal = []
        elif char == "}":
            raise TemplateError(f"single '}}' at offset {i} (write }}}} for a literal brace)")
        else:
            literal.append(char)
            i += 1
    if literal or not parts:
        parts.append(("".join(literal), ""))
    return tuple(parts)


def unparse(parts: Parts) -> str:
    """The template text of `parts`: `parse(unparse(p)) == p` for parts `parse` returned."""
    return "".join(
        literal.replace("{", "{{").replace("}", "}}") + (f"{{{name}}}" if name else "")
        for literal, name in parts
    )
