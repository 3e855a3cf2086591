"""FimWatcher `logFormat` templates: parsed and validated at CreateWatch, rendered per event.

Syntax (the one grammar of `libs.k8s.logformat`, which the FimWatcher model and the CRD
schema apply too): literal text with `{name}` placeholders; `{{` and `}}` are literal braces.
Nothing else is interpreted: no format specs, attribute access or indexing (a template comes
from a user, so it must never reach `str.format`). Unknown names, unbalanced braces, control
characters other than tab and U+2028/U+2029 are rejected when the watch is created.

Every placeholder value is escaped like the inside of a JSON string (`escape_value`), without
the surrounding quotes: `"` -> `\\"`, `\\` -> `\\\\`, C0 controls -> `\\b \\t \\n \\f \\r` or
`\\u00XX`, and DEL, the C1 controls (U+0080..U+009F, NEL U+0085 among them), U+2028, U+2029
and the bidirectional formatting characters (U+061C, U+200E, U+200F, U+202A..U+202E,
U+2066..U+2069) -> `\\uXXXX`. So a value (a file name the watched pod chose) can neither close
a quoted field of the template nor start a new line nor reorder what a viewer shows, and
`json.loads('"' + value + '"')` gives the value back. In a JSON-shaped template, put every
placeholder inside quotes: `{"event":"{event}","path":"{path}","pathBytes":"{pathBytes}"}`.

Placeholders (values as in the JSON event line, see `services.fimd.lines`):
  {time} {node} {namespace} {pod} {container} {watcher} {event}
  {path}       the path as text; not valid UTF-8: each invalid sequence is U+FFFD
  {pathBytes}  "" when the path is valid UTF-8, else the base64 of its raw bytes
  {isDir} (`true`/`false`) {tags} (the compact JSON object, escaped like every value)
Compatibility names of earlier FIM tools:
  {ftype} `file` or `directory`; {dir} and {file}: the directory and the last component
  of {path}; {sep} `/` between them (empty when {dir} is `/`), so `{dir}{sep}{file}`
  equals {path}.
Volume (`services.fimd.volume`): {count} the occurrences a line stands for, {first} and
  {last} the times of the first and the last of them. A line of a subject with `coalesce`
  has its counts; any other line is one event: `1`, and its {time} twice. Summary lines (a
  watch over its line budget) are never templated: they are JSON, like operational lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from libs.fimlines import BIDI_FORMATTING
from libs.k8s.logformat import PLACEHOLDERS, TemplateError, parse

__all__ = [
    "JSON_EXTRA_ESCAPES",
    "PLACEHOLDERS",
    "Template",
    "TemplateError",
    "compile_template",
    "escape_value",
]

# The one list, shared with the readers of the lines (libs.fimlines).
_BIDI = BIDI_FORMATTING

#: Characters that JSON (with ensure_ascii=False) leaves raw but no line may hold raw:
#: DEL, C1, U+2028, U+2029, bidirectional formatting characters, and lone surrogates (which
#: only text from outside the renderers can hold; they become U+FFFD, UTF-8 cannot carry them).
JSON_EXTRA_ESCAPES: dict[int, str] = {
    **{c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029, *_BIDI)},
    **dict.fromkeys(range(0xD800, 0xE000), "\\ufffd"),
}

#: Every character `escape_value` rewrites, and how.
_VALUE_ESCAPES: dict[int, str] = {
    **{c: f"\\u{c:04x}" for c in range(0x20)},
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    0x22: '\\"',
    0x5C: "\\\\",
    **JSON_EXTRA_ESCAPES,
}


def _char_class(codes: Mapping[int, str]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + "]")


_VALUE_UNSAFE = _char_class(_VALUE_ESCAPES)


def escape_value(text: str) -> str:
    """`text` escaped as the inside of a JSON string (see the module docstring)."""
    if _VALUE_UNSAFE.search(text) is None:
        return text
    return text.translate(_VALUE_ESCAPES)


@attrs.frozen
class Template:
    """A parsed template: alternating literal text and placeholder names."""

    #: (literal, placeholder) pairs; the placeholder of the last pair may be "".
    parts: tuple[tuple[str, str], ...]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.parts if name)

    def render(self, values: Mapping[str, str]) -> str:
        """The line for `values` (raw text; each is escaped here, see `escape_value`)."""
        return "".join(
            literal + (escape_value(values[name]) if name else "") for literal, name in self.parts
        )


def compile_template(text: str) -> Template:
    """Parses `text`; raises TemplateError naming the first problem."""
    return Template(parse(text))
