"""Bounds on text the controller did not write: fimd's messages, API server errors, specs.

fimd's watch and error messages name files inside pods, so a pod controls them; API server
errors echo what was sent; a FimWatcher's spec error quotes the spec. Before any such text
is kept, logged or written into a status or an Event it is clipped here, with a marker that
gives its original length, so nothing outside the controller makes a log line, an Event,
a status or the controller's memory unbounded.
"""

from __future__ import annotations

import traceback

#: One string field of a log line (JSON escaping may at most sextuple it).
MAX_LOGGED = 1024
#: A message from outside kept in memory (fimd's watch, rejection and error messages).
MAX_STORED = 4096
#: core/v1 Event `message` (events.k8s.io's `note` limit; the API server counts bytes).
MAX_EVENT_BYTES = 1024
#: Innermost frames of a traceback that are logged (code locations only, no values).
MAX_FRAMES = 8


def _marker(length: int, unit: str) -> str:
    return f"... [truncated, {length} {unit}]"


def clip(text: str, limit: int) -> str:
    """`text`, or its start and a marker naming its length, in at most `limit` characters."""
    if len(text) <= limit:
        return text
    marker = _marker(len(text), "characters")
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


def clip_bytes(text: str, limit: int) -> str:
    """Like `clip`, counting UTF-8 bytes (never splits a character)."""
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= limit:
        return text
    marker = _marker(len(encoded), "bytes")  # ASCII: one byte per character
    if limit <= len(marker):
        return encoded[:limit].decode("utf-8", errors="ignore")
    return encoded[: limit - len(marker)].decode("utf-8", errors="ignore") + marker


def describe(err: BaseException, limit: int = MAX_LOGGED) -> str:
    """`Type: message` of an exception, bounded; never raises."""
    try:
        message = str(err)
    except Exception:  # a broken __str__ must not turn one failure into two
        message = "<unprintable>"
    return clip(f"{error_type(err)}: {message}" if message else error_type(err), limit)


def error_type(err: BaseException) -> str:
    """The exception's class name (a bounded label: classes come from code, not input)."""
    return type(err).__name__


def frames(err: BaseException, limit: int = MAX_LOGGED * 4) -> str:
    """Where `err` was raised: its innermost frames (file, line, function, source line)."""
    innermost = traceback.extract_tb(err.__traceback__)[-MAX_FRAMES:]
    return clip("".join(traceback.format_list(innermost)), limit)
