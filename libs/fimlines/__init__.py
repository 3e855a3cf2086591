"""Reading fimd's lines: the consumer side of the line contract (docs/architecture.md,
*Lines on fimd's stdout*; written by `services/fimd/lines.py`). Standard library only: the
kubectl plugin (`plugins/kubectl_fim`) bundles it into a zipapp that must run on any
Python 3.11 without third-party packages.

- `parse` reads one line into its JSON object (None for anything else: a `logFormat`
  template line, a traceback, a line over `MAX_LINE_BYTES`).
- `raw_path` gives back the raw bytes of a path from `path` and `pathBytes`.
- `UNSAFE` is every character no line holds raw, because a terminal or a line splitter would
  act on it: the C0 controls, DEL, the C1 controls, U+2028, U+2029 and the bidirectional
  formatting characters (`BIDI_FORMATTING`). fimd escapes them inside JSON strings (tab, CR
  and LF as JSON requires, the rest as `\\uXXXX`); `neutralise` makes text safe to show
  on a terminal.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

#: The kinds of JSON lines fimd writes (`kind`): file events, budget summaries, operations,
#: differences from a stored baseline and the summary of one comparison (docs/logging.md).
EVENT = "event"
SUMMARY = "summary"
OP = "op"
DRIFT = "drift"
SCAN = "scan"

#: The longest line a reader accepts (fimd's longest lines, summaries with ten paths of up
#: to 4 KiB each escaped, stay far below this).
MAX_LINE_BYTES = 1 << 20

#: Bidirectional formatting characters: they reorder what a viewer shows (U+061C, U+200E,
#: U+200F, U+202A..U+202E, U+2066..U+2069).
BIDI_FORMATTING: tuple[int, ...] = (
    0x061C,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
)

#: Every character that no line holds raw (see the module docstring).
UNSAFE: frozenset[int] = frozenset(
    (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *BIDI_FORMATTING)
)
_UNSAFE_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(UNSAFE)) + "]")


# What `neutralise` rewrites: UNSAFE, the backslash, and surrogates (which no terminal can
# show: U+DC80..U+DCFF stand for the undecodable bytes of `shown_path`).
_SHOWN_RE = re.compile("[\\\\\ud800-\udfff" + _UNSAFE_RE.pattern[1:])


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code == 0x5C:
        return "\\\\"
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def neutralise(text: str) -> str:
    """`text` as it may be shown on a terminal: each UNSAFE character replaced by a visible
    escape (`\\x1b`, `\\u202e`) and each backslash doubled (so a file named by the byte ESC
    and one named by the four characters `\\x1b` look different). Printing the result can
    neither move the cursor, change colours, start a line nor reorder what is shown."""
    # Fast path: no control, format, separator or surrogate character (none is printable)
    # and no backslash.
    if text.isprintable() and "\\" not in text:
        return text
    return _SHOWN_RE.sub(_visible, text)


def shown_path(path: str, path_bytes: str = "") -> str:
    """A line's path as it may be shown on a terminal: the raw path (`raw_path`) decoded as
    UTF-8, each byte that is not part of valid UTF-8 shown as `\\xNN`, then `neutralise`d.
    A `pathBytes` that is not base64 shows `path` itself."""
    try:
        raw = raw_path(path, path_bytes)
    except (ValueError, UnicodeEncodeError):
        return neutralise(path)
    return neutralise(raw.decode("utf-8", "surrogateescape"))


def has_unsafe(text: str) -> bool:
    """Whether `text` holds a raw UNSAFE character."""
    return _UNSAFE_RE.search(text) is not None


def parse(line: str) -> dict[str, Any] | None:
    """The JSON object of one line (without or with its line break), or None when the line
    is not one JSON object or is longer than MAX_LINE_BYTES."""
    if len(line) > MAX_LINE_BYTES or not line.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError's parent
        return None
    return value if isinstance(value, dict) else None


def raw_path(path: str, path_bytes: str = "") -> bytes:
    """The raw path of a line's `path` and `pathBytes` (base64 of the raw bytes, present
    when they are not UTF-8). Raises ValueError (binascii.Error) for `pathBytes` that is
    not base64."""
    if not path_bytes:
        return path.encode("utf-8")
    return base64.b64decode(path_bytes, validate=True)
