"""FimWatcher `logFormat` templates: parsed and validated at CreateWatch, rendered per event.

Syntax: literal text with `{name}` placeholders; `{{` and `}}` are literal braces. Nothing
else is interpreted: no format specs, attribute access or indexing (a template comes from a
user, so it must never reach `str.format`). Unknown names and NUL, CR, LF (as in the
FimWatcher model) are rejected when the watch is created. Control characters in values (a file
name may contain a newline) are written as `\\xNN`, so one event is always one line.

Placeholders (values as in the JSON event line, see `services.fimd.lines`):
  {time} {node} {namespace} {pod} {container} {watcher} {event} {path}
  {isDir} (`true`/`false`) {tags} (compact JSON object)
Compatibility names of earlier FIM tools:
  {ftype} `file` or `directory`; {dir} and {file}: the directory and the last component
  of {path}; {sep} `/` between them (empty when {dir} is `/`), so `{dir}{sep}{file}`
  equals {path}.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

PLACEHOLDERS: tuple[str, ...] = (
    "time",
    "node",
    "namespace",
    "pod",
    "container",
    "watcher",
    "event",
    "path",
    "isDir",
    "tags",
    "ftype",
    "dir",
    "file",
    "sep",
)
_KNOWN = frozenset(PLACEHOLDERS)


class TemplateError(ValueError):
    """The template cannot be parsed; the message says where and why."""


@attrs.frozen
class Template:
    """A parsed template: alternating literal text and placeholder names."""

    #: (literal, placeholder) pairs; the placeholder of the last pair may be "".
    parts: tuple[tuple[str, str], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.parts if name)

    def render(self, values: Mapping[str, str]) -> str:
        return "".join(literal + (values[name] if name else "") for literal, name in self.parts)


def _placeholder(text: str, start: int) -> tuple[str, int]:
    """Reads `{name}` at `start`; returns the name and the index after `}`."""
    end = text.find("}", start)
    if end < 0:
        raise TemplateError(f"unclosed '{{' at offset {start}")
    name = text[start + 1 : end]
    if name not in _KNOWN:
        raise TemplateError(
            f"unknown placeholder {{{name}}} at offset {start}; "
            f"known: {' '.join('{' + n + '}' for n in PLACEHOLDERS)} "
            "(write {{ and }} for literal braces)"
        )
    return name, end + 1


def compile_template(text: str) -> Template:
    """Parses `text`; raises TemplateError naming the first problem."""
    for offset, char in enumerate(text):
        if char in "\x00\r\n":
            raise TemplateError(f"{char!r} at offset {offset}: one event is one line")
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
    return Template(tuple(parts))
