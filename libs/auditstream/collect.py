"""Reads collected fimd lines back into the exact bytes fimd wrote.

Accepted inputs (detected per file, or forced with `fmt`):

- `kubectl logs` output, plain or with `--timestamps` and/or `--prefix` (also several pods
  interleaved, `kubectl logs -l ... --prefix`): the prefix `[pod/NAME/CONTAINER] ` and the
  timestamp `RFC3339 ` are removed when every line of the file carries them (a logFormat
  line may itself start with a time, so the decision is per file, never per line);
- Loki: `logcli query --output=jsonl` (one `{"line": ..., "timestamp": ...}` per line), or
  the query_range API's JSON response (`data.result[].values` of `[ns, line]`), sorted by
  time because Loki answers newest first;
- Elastic: a search response (`hits.hits[]`) or one document per line (NDJSON, `_source`
  or the document itself), the line being `event.original` if kept, else `message`.

Lines from kubectl logs keep their order, which the verifier judges; Loki and Elastic
order by their own timestamps, so their order is not judged (`Record.ordered`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

FORMATS = ("auto", "kubectl", "loki", "elastic")
_PREFIX = re.compile(rb"\A\[pod/[^\]\s]+/[^\]\s]+\] ")
_STAMP = re.compile(rb"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d) ")


class InputError(ValueError):
    """A file that cannot be read as any of the accepted exports."""


@dataclass(frozen=True)
class Record:
    line: bytes  # exactly as fimd wrote it, without the newline
    source: str  # file name and line or entry number, for reports
    ordered: bool  # True when the input order is fimd's write order


def _strip_all(lines: list[bytes], pattern: re.Pattern[bytes]) -> list[bytes]:
    if lines and all(pattern.match(line) for line in lines):
        return [pattern.sub(b"", line, count=1) for line in lines]
    return lines


def _text(value: object) -> bytes | None:
    return value.encode("utf-8") if isinstance(value, str) else None


def _elastic_line(doc: dict[str, Any]) -> bytes | None:
    source = doc.get("_source", doc)
    if not isinstance(source, dict):
        return None
    event = source.get("event")
    if isinstance(event, dict) and isinstance(event.get("original"), str):
        return _text(event["original"])
    return _text(source.get("message"))


def _loki_document(doc: dict[str, Any], name: str) -> Iterator[Record]:
    entries: list[tuple[int, int, bytes]] = []
    for stream in doc.get("data", {}).get("result", []):
        for value in stream.get("values", []):
            line = _text(value[1]) if isinstance(value, list) and len(value) >= 2 else None
            if line is None:
                raise InputError(f"{name}: a Loki value is not [timestamp, line]")
            entries.append((int(value[0]), len(entries), line))
    for _, index, line in sorted(entries):
        yield Record(line, f"{name}: entry {index + 1}", ordered=False)


def _elastic_document(doc: dict[str, Any], name: str) -> Iterator[Record]:
    for index, hit in enumerate(doc.get("hits", {}).get("hits", [])):
        line = _elastic_line(hit) if isinstance(hit, dict) else None
        if line is None:
            raise InputError(f"{name}: hit {index + 1} has no message or event.original")
        yield Record(line, f"{name}: hit {index + 1}", ordered=False)


def _document(data: bytes, name: str) -> list[Record] | None:
    """The records of a whole-file Loki or Elastic response, else None."""
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    if isinstance(doc, dict) and isinstance(doc.get("data"), dict) and "result" in doc["data"]:
        return list(_loki_document(doc, name))
    if isinstance(doc, dict) and isinstance(doc.get("hits"), dict):
        return list(_elastic_document(doc, name))
    return None


def _wrapped(line: bytes, fmt: str) -> tuple[bytes, bool] | None:
    """(fimd's line, ordered) of a Loki or Elastic export line, or None for a raw line."""
    if fmt == "kubectl" or not line.startswith(b"{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if fmt in ("auto", "loki") and isinstance(doc.get("line"), str) and "kind" not in doc:
        return doc["line"].encode("utf-8"), False
    if fmt in ("auto", "elastic") and ("_source" in doc or "@timestamp" in doc):
        inner = _elastic_line(doc)
        return (inner, False) if inner is not None else None
    return None


def records(data: bytes, name: str, fmt: str = "auto") -> list[Record]:
    """Every line of one exported file, as fimd wrote it."""
    if fmt not in FORMATS:
        raise InputError(f"unknown input format {fmt!r}")
    if fmt != "kubectl":
        document = _document(data, name)
        if document is not None:
            return document
    lines = [line for line in data.split(b"\n") if line.strip()]
    lines = _strip_all(_strip_all(lines, _PREFIX), _STAMP)
    out: list[Record] = []
    for number, line in enumerate(lines, 1):
        wrapped = _wrapped(line, fmt)
        if wrapped is None:
            out.append(Record(line, f"{name}:{number}", ordered=True))
        else:
            out.append(Record(wrapped[0], f"{name}:{number}", ordered=wrapped[1]))
    return out


def read_all(paths: Iterable[tuple[str, bytes]], fmt: str = "auto") -> list[Record]:
    result: list[Record] = []
    for name, data in paths:
        result.extend(records(data, name, fmt))
    return result
